//! Counters of the shadow proxy and of replay, in the Prometheus text
//! exposition format (served at the shadow listener's `/metrics`).
//!
//! The set is small and fixed, so it is written by hand rather than through
//! a metrics registry: a mutex-guarded map per family, rendered on demand.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::shadow::compare::Outcome;

/// The routes whose answers are compared (COMPAT §1.1 names).
pub const COMPARED_ROUTES: &[&str] = &[
    "conversations",
    "messages",
    "get-new-messages",
    "insert-message",
    "create-conversation",
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counts>,
}

/// A copy of every counter; also the `summary` record of the mismatch log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// (route, outcome) → comparisons.
    #[serde(with = "pairs")]
    pub outcomes: BTreeMap<(String, String), u64>,
    /// (route, deviation) → comparisons classified `expected`.
    #[serde(with = "pairs")]
    pub expected: BTreeMap<(String, String), u64>,
    /// (route, status) → requests forwarded to the primary.
    #[serde(with = "pairs")]
    pub proxied: BTreeMap<(String, String), u64>,
    /// The primary could not be reached or broke off its answer.
    pub primary_errors: u64,
    /// Log records not written because the log reached its cap.
    pub log_dropped: u64,
}

/// Maps with tuple keys as lists of `[a, b, n]` in JSON.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<(String, String), u64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|((a, b), n)| (a, b, n)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(String, String), u64>, D::Error> {
        let list: Vec<(String, String, u64)> = Vec::deserialize(d)?;
        Ok(list.into_iter().map(|(a, b, n)| ((a, b), n)).collect())
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics::default();
        {
            let mut c = m.lock();
            // Zeros from the start, so a dashboard can tell "none" from "unknown".
            for route in COMPARED_ROUTES {
                for o in Outcome::ALL {
                    c.outcomes
                        .insert((route.to_string(), o.as_str().to_string()), 0);
                }
            }
        }
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn outcome(&self, route: &str, outcome: Outcome, deviation: Option<&str>) {
        let mut c = self.lock();
        *c.outcomes
            .entry((route.to_string(), outcome.as_str().to_string()))
            .or_default() += 1;
        if let Some(d) = deviation {
            *c.expected
                .entry((route.to_string(), d.to_string()))
                .or_default() += 1;
        }
    }

    pub fn proxied(&self, route: &str, status: u16) {
        *self
            .lock()
            .proxied
            .entry((route.to_string(), status.to_string()))
            .or_default() += 1;
    }

    pub fn primary_error(&self) {
        self.lock().primary_errors += 1;
    }

    pub fn log_dropped(&self) {
        self.lock().log_dropped += 1;
    }

    pub fn snapshot(&self) -> Counts {
        self.lock().clone()
    }

    /// Comparisons finished or dropped so far (all outcomes).
    pub fn total(&self) -> u64 {
        self.lock().outcomes.values().sum()
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        let c = self.snapshot();
        let mut out = String::new();
        family(
            &mut out,
            "shopchat_shadow_comparisons_total",
            "counter",
            "Answers compared, by route and outcome (match, mismatch, expected, error, dropped).",
        );
        for ((route, outcome), n) in &c.outcomes {
            let _ = writeln!(
                out,
                "shopchat_shadow_comparisons_total{{route=\"{}\",outcome=\"{}\"}} {n}",
                label(route),
                label(outcome)
            );
        }
        family(
            &mut out,
            "shopchat_shadow_expected_total",
            "counter",
            "Differences explained by a deliberate deviation (COMPAT §9), by route and deviation.",
        );
        for ((route, dev), n) in &c.expected {
            let _ = writeln!(
                out,
                "shopchat_shadow_expected_total{{route=\"{}\",deviation=\"{}\"}} {n}",
                label(route),
                label(dev)
            );
        }
        family(
            &mut out,
            "shopchat_shadow_proxied_total",
            "counter",
            "Requests forwarded to the primary, by route and the primary's status.",
        );
        for ((route, status), n) in &c.proxied {
            let _ = writeln!(
                out,
                "shopchat_shadow_proxied_total{{route=\"{}\",status=\"{}\"}} {n}",
                label(route),
                label(status)
            );
        }
        family(
            &mut out,
            "shopchat_shadow_primary_errors_total",
            "counter",
            "Requests the primary did not answer completely.",
        );
        let _ = writeln!(
            out,
            "shopchat_shadow_primary_errors_total {}",
            c.primary_errors
        );
        family(
            &mut out,
            "shopchat_shadow_log_dropped_total",
            "counter",
            "Mismatch-log records not written because the log is full.",
        );
        let _ = writeln!(out, "shopchat_shadow_log_dropped_total {}", c.log_dropped);
        family(
            &mut out,
            "shopchat_shadow_queue_depth",
            "gauge",
            "Comparisons waiting in the queue.",
        );
        let _ = writeln!(out, "shopchat_shadow_queue_depth {queue_depth}");
        family(
            &mut out,
            "shopchat_shadow_queue_capacity",
            "gauge",
            "Size of the comparison queue; work beyond it is dropped.",
        );
        let _ = writeln!(out, "shopchat_shadow_queue_capacity {queue_capacity}");
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escape `\`, `"` and newlines.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_zeros() {
        let m = Metrics::new();
        m.outcome("messages", Outcome::Expected, Some("D1"));
        m.proxied("messages", 200);
        let text = m.render(1, 10);
        assert!(text.contains(
            "shopchat_shadow_comparisons_total{route=\"messages\",outcome=\"expected\"} 1\n"
        ));
        assert!(text.contains(
            "shopchat_shadow_comparisons_total{route=\"conversations\",outcome=\"match\"} 0\n"
        ));
        assert!(text
            .contains("shopchat_shadow_expected_total{route=\"messages\",deviation=\"D1\"} 1\n"));
        assert!(text.contains("shopchat_shadow_queue_depth 1\n"));
        assert_eq!(m.total(), 1);
        let json = serde_json::to_string(&m.snapshot()).unwrap();
        let back: Counts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m.snapshot());
    }
}
