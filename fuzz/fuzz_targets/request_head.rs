//! The connection guard's HTTP/1.1 framing tracker (§1.2 step 0,
//! `http::limits`): any byte stream, cut into reads anywhere, gives the same
//! verdict as the stream read at once, and never panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shopchat::http::limits::{HeadLimits, Tracker, Verdict};

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits {
        max_head_bytes: 256,
        client_timeout: Duration::from_secs(10),
    };
    let whole = Tracker::new(limits).feed(stream) != Verdict::Pass;
    let mut t = Tracker::new(limits);
    let mut cut = false;
    for chunk in stream.chunks(usize::from(step).max(1)) {
        if t.feed(chunk) != Verdict::Pass {
            cut = true;
            break;
        }
    }
    assert_eq!(whole, cut);
});
