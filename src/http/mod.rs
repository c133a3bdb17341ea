//! HTTP plumbing: routing, the request pipeline, input, answers.

pub mod conn;
pub mod input;
pub mod origin;
pub mod pipeline;
pub mod ratelimit;
pub mod response;
pub mod routing;
