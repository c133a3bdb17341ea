//! Laravel Sanctum token authentication (COMPAT §2).

pub mod bearer;
pub mod sanctum;
pub mod tokens;
