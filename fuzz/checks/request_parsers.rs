//! Every parser a request's bytes reach before the database: the bearer
//! header (§2), the route matcher (§1.1), the Host check and `<root>` (§4.3),
//! `page` (§4.2) and the input bodies (§5.0). None may panic; the cheap
//! invariants of the contract are asserted on the way.
//!
//! Shared by the cargo-fuzz target (`fuzz_targets/request_parsers.rs`) and the
//! bounded run of every `cargo test` (`tests/fuzz.rs`).

use shopchat::auth::bearer::{parse_authorization, BearerToken};
use shopchat::http::input::Input;
use shopchat::http::origin::{origin, valid_host};
use shopchat::http::routing::match_path;
use shopchat::laravel::paginate::parse_page_str;

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/plain",
];

pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);

    if let Some(BearerToken::IdSecret { secret, .. }) = parse_authorization(rest) {
        assert!(!secret.is_empty() && secret != b"0" && !secret.contains(&b','));
    }
    let _ = match_path(&text);
    if valid_host(&text) {
        let o = origin("http", &text, None);
        assert!(o.starts_with("http://"));
    }
    assert!(parse_page_str(&text) >= 1);
    assert!(Input::from_query(&text).page() >= 1);

    let ct = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let input = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(Input::from_post(Some(ct), rest, "page=2"));
    assert!(input.page() >= 1);
}
