//! cargo-fuzz target: the request parsers (checks/request_parsers.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/request_parsers.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
