//! The mismatch log: JSON lines, capped in size (docs/shadow.md, "Mismatch log").
//!
//! Record kinds: `mismatch` and `error` carry both answers, the request with
//! its secrets redacted and a byte-level diff; `expected` carries the
//! deviation and the statuses only (they are frequent and understood);
//! `summary` carries every counter and is written periodically and at exit,
//! also once the cap is reached, so `shopchat shadow report` always has totals.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Value};

use crate::shadow::compare::{byte_diff, Outcome, Verdict};
use crate::shadow::exchange::Exchange;
use crate::shadow::metrics::Counts;

pub struct MismatchLog {
    file: File,
    written: u64,
    cap: u64,
}

impl MismatchLog {
    /// Appends to `path`; its current size counts towards `cap` bytes. The log holds chat text,
    /// names and the answers' headers: it is created readable by its owner only, and an
    /// existing one is narrowed to that (security review L4).
    pub fn open(path: &Path, cap: u64) -> io::Result<MismatchLog> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let written = file.metadata()?.len();
        Ok(MismatchLog { file, written, cap })
    }

    /// Writes a detail record; `false` when the cap leaves no room for it.
    pub fn record(&mut self, record: &Value) -> io::Result<bool> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.written + line.len() as u64 > self.cap {
            return Ok(false);
        }
        self.write(&line)?;
        Ok(true)
    }

    /// Writes a summary record, whatever the cap (they are small and rare).
    pub fn summary(&mut self, counts: &Counts) -> io::Result<()> {
        let mut line = serde_json::to_vec(&json!({
            "kind": "summary",
            "time": now(),
            "counts": counts,
        }))
        .map_err(io::Error::other)?;
        line.push(b'\n');
        self.write(&line)
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.file.write_all(line)?;
        self.file.flush()?;
        self.written += line.len() as u64;
        Ok(())
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The log record of one judged exchange.
pub fn detail_record(ex: &Exchange<'_>, verdict: &Verdict) -> Value {
    let mut rec = json!({
        "kind": verdict.outcome.as_str(),
        "time": now(),
        "route": ex.route,
        "method": ex.request.method,
        "path": ex.request.path,
        "deviation": verdict.deviation,
        "differences": verdict.differences,
        "status": [ex.primary.status, ex.candidate.status],
    });
    if verdict.outcome != Outcome::Expected {
        rec["request"] = serde_json::to_value(ex.request.redacted()).unwrap_or(Value::Null);
        rec["primary"] = ex.primary.to_json();
        rec["shadow"] = ex.candidate.to_json();
        if ex.primary.body != ex.candidate.body {
            rec["diff"] = serde_json::to_value(byte_diff(&ex.primary.body, &ex.candidate.body))
                .unwrap_or(Value::Null);
        }
        if let Some(again) = ex.primary_again {
            rec["primary_again"] = again.to_json();
        }
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut log = MismatchLog::open(&path, 40).unwrap();
        assert!(log.record(&json!({"kind": "mismatch"})).unwrap());
        assert!(!log
            .record(&json!({"kind": "mismatch", "more": "x".repeat(40)}))
            .unwrap());
        log.summary(&Counts::default()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).unwrap().contains("\"summary\""));
        // Reopening counts what is already there.
        let mut again = MismatchLog::open(&path, 40).unwrap();
        assert!(!again.record(&json!({"kind": "mismatch"})).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn only_its_owner_reads_the_log() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        MismatchLog::open(&path, 40).unwrap();
        assert_eq!(mode(&path), 0o600);
        // An older log, world-readable, is narrowed when reopened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        MismatchLog::open(&path, 40).unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}
