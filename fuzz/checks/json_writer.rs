//! The PHP JSON writers (COMPAT §3) round-trip: whatever JSON value the fuzzer
//! finds, `to_php_json` and `to_php_json_pretty` print text that parses back
//! to the same value, is pure ASCII, and escapes `/` only in the compact form.
//!
//! Shared by the cargo-fuzz target (`fuzz_targets/json_writer.rs`) and the
//! bounded run of every `cargo test` (`tests/fuzz.rs`).

use serde_json::Value;
use shopchat::laravel::json::{to_php_json, to_php_json_pretty};

pub fn check(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for out in [to_php_json(&value), to_php_json_pretty(&value)] {
        let back: Value = serde_json::from_str(&out).expect("writer output is JSON");
        assert_eq!(back, value, "round trip of {out}");
        assert!(out.is_ascii(), "non-ASCII in {out}");
    }
    let compact = to_php_json(&value);
    assert!(!compact.replace("\\\\", "").replace("\\/", "").contains('/'));
}
