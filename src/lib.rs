//! shopchat: a drop-in Rust replacement for the Active eCommerce CMS mobile
//! chat API (`/api/v2/chat/*`). The contract is `docs/spec/COMPAT.md` (in this
//! repository); section numbers in comments (§…) and rule ids (K…, D…) refer
//! to it. `docs/architecture.md` maps the modules.

pub mod auth;
pub mod cache;
pub mod chat;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod ids;
pub mod laravel;
pub mod mail;
pub mod openapi;
pub mod ops;
pub mod per_thread;
pub mod shadow;
pub mod shop;
pub mod startup;
pub mod state;
pub mod sync;
pub mod telemetry;
