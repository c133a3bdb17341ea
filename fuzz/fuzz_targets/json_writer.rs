//! cargo-fuzz target: the PHP JSON writers (checks/json_writer.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/json_writer.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
