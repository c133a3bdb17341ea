//! The fuzz targets of `fuzz/` (security review §4: they never ran), driven for a bounded time
//! on the stable toolchain by every `cargo test`: a small mutational fuzzer over seed inputs
//! shaped like real requests. cargo-fuzz (nightly, coverage-guided) runs the same checks
//! (`fuzz/checks/`) for as long as one likes: fuzz/README.md.
//!
//! `SHOPCHAT_FUZZ_SECONDS` (default 4) is the time per target; `SHOPCHAT_FUZZ_SEED` replays a
//! run. A failure prints the seed and the input (hex) that broke a check.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../fuzz/checks/json_writer.rs"]
mod json_writer;
#[path = "../fuzz/checks/request_parsers.rs"]
mod request_parsers;

fn budget() -> Duration {
    let secs = std::env::var("SHOPCHAT_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0);
    Duration::from_secs_f64(secs)
}

/// One mutation of `input`: byte flips, inserts, deletes, repeats, splices with another seed
/// or random bytes — the classic moves of a mutational fuzzer.
fn mutate(rng: &mut StdRng, input: &[u8], seeds: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = out.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let i = rng.gen_range(0..=len);
                let interesting: &[u8] = match rng.gen_range(0..8) {
                    0 => b"|",
                    1 => b"%",
                    2 => b"\\u",
                    3 => b"\xff",
                    4 => b"[]",
                    5 => b"\r\n",
                    6 => b"\"",
                    _ => b"\0",
                };
                out.splice(i..i, interesting.iter().copied());
            }
            2 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 16));
                out.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 8));
                let chunk = out[a..b].to_vec();
                for _ in 0..rng.gen_range(1..64) {
                    out.splice(a..a, chunk.iter().copied());
                }
            }
            4 => {
                let other = seeds[rng.gen_range(0..seeds.len())];
                let cut = rng.gen_range(0..=out.len());
                let from = rng.gen_range(0..=other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            5 => {
                let i = rng.gen_range(0..=len);
                let random: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                out.splice(i..i, random);
            }
            _ if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] = rng.gen();
            }
            _ => out.push(rng.gen()),
        }
    }
    out.truncate(64 * 1024);
    out
}

/// Runs `check` on the seeds, then on mutations of them, for the time budget.
fn fuzz(name: &str, seeds: &[&[u8]], check: fn(&[u8])) {
    let seed: u64 = std::env::var("SHOPCHAT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut corpus: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    let mut runs = 0u64;
    let run = |input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            panic!(
                "fuzz {name}: a check failed (SHOPCHAT_FUZZ_SEED={seed}) on input {}",
                hex(input)
            );
        }
    };
    for s in seeds {
        run(s);
    }
    while started.elapsed() < budget() {
        let parent = corpus[rng.gen_range(0..corpus.len())].clone();
        let child = mutate(&mut rng, &parent, seeds);
        run(&child);
        runs += 1;
        // Keep some children as parents: mutations build on mutations.
        if rng.gen_ratio(1, 16) && corpus.len() < 4096 {
            corpus.push(child);
        }
    }
    println!(
        "fuzz {name}: {runs} inputs in {:.1} s (SHOPCHAT_FUZZ_SEED={seed})",
        started.elapsed().as_secs_f64()
    );
    assert!(runs > 0, "the time budget ran no input");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn fuzz_request_parsers() {
    // The first byte selects the body's Content-Type (checks/request_parsers.rs).
    fuzz(
        "request_parsers",
        &[
            b"\x00Bearer 5|e82dec50eb35333b411bdc59de6c1b222cbf49b6",
            b"\x01Token x, Bearer 007|abc, Basic y",
            b"\x02/api/v2/chat/messages/%31/?page=%2B2",
            b"\x03/api/v2/chat/get-new-messages/1/1e3",
            b"\x00{\"conversation_id\":\"1\",\"message\":\"\\u00e9 \\ud83d\\ude00\",\"page\":2.0}",
            b"\x01conversation_id=+5&message=a%20b&k[]=1&k[]=2&page=9223372036854775808",
            b"\x02--x\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nhi\r\n--x--\r\n",
            b"\x03[::1]:8080",
            b"\x00Shop.EXAMPLE.com:80",
            b"\x01[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]",
        ],
        request_parsers::check,
    );
}

#[test]
fn fuzz_json_writer() {
    fuzz(
        "json_writer",
        &[
            b"{\"a\":\"<b>\\\"x\\\"</b> & a/b\",\"b\":[1,2.5,-0,1e300,true,null]}",
            "{\"t\":\"Caf\u{e9} \u{2014} \u{0986} \u{1F600}\"}".as_bytes(),
            b"[\"\\u0000\\u001f\\u007f\\b\\f\\n\\r\\t\",{},[],\"\"]",
            b"\"\\ud83d\\ude00\"",
            b"123456789012345678901234567890",
        ],
        json_writer::check,
    );
}
