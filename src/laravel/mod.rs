//! Laravel / PHP compatibility primitives: small formats re-implemented byte
//! for byte, each pure and unit-tested (COMPAT §3, §4, §6, §7, §8). The services
//! that read the shop's data (translations, uploads) are in `shop/`.

pub mod accept;
pub mod dates;
pub mod encrypter;
pub mod json;
pub mod paginate;
pub mod text;
