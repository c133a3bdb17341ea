//! HTTP plumbing: routing, the request pipeline, input, answers.

pub mod conn;
pub mod input;
pub mod ops_endpoints;
pub mod origin;
pub mod pipeline;
pub mod ratelimit;
pub mod ratelimit_redis;
pub mod request;
pub mod response;
pub mod routing;
pub mod throttle;
