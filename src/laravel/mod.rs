//! Laravel / PHP compatibility primitives: small formats re-implemented byte
//! for byte, each pure and unit-tested (COMPAT §3, §4, §6, §7, §8).

pub mod accept;
pub mod assets;
pub mod dates;
pub mod encrypter;
pub mod json;
pub mod paginate;
pub mod text;
pub mod translate;
