//! The shop's own data that answers depend on, read from its database through short-lived
//! caches: the `translations` table behind `translate()` (COMPAT §7.1) and the uploads and
//! business settings behind logos and file URLs (§7.2–§7.4). Unlike `laravel/`, these are
//! services with a pool and a cache; the formats they produce come from `laravel/`.

pub mod assets;
pub mod translate;
