//! Counters of the shadow proxy and of replay (served at the shadow listener's `/metrics`), in
//! a registry of their own, like the service's (`ops::metrics`).

use std::collections::BTreeMap;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use serde::{Deserialize, Serialize};

use crate::ops::metrics::{counter, counter_vec, gauge};
use crate::shadow::compare::Outcome;

/// The routes whose answers are compared (COMPAT §1.1 names).
pub const COMPARED_ROUTES: &[&str] = &[
    "conversations",
    "messages",
    "get-new-messages",
    "insert-message",
    "create-conversation",
];

pub struct Metrics {
    registry: Registry,
    comparisons: IntCounterVec,
    expected: IntCounterVec,
    proxied: IntCounterVec,
    primary_errors: IntCounter,
    log_dropped: IntCounter,
    queue_depth: IntGauge,
    queue_capacity: IntGauge,
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            comparisons: counter_vec(
                &r,
                "shopchat_shadow_comparisons_total",
                "Answers compared, by route and outcome (match, mismatch, expected, error, dropped).",
                &["route", "outcome"],
            ),
            expected: counter_vec(
                &r,
                "shopchat_shadow_expected_total",
                "Differences explained by a deliberate deviation (COMPAT §9), by route and deviation.",
                &["route", "deviation"],
            ),
            proxied: counter_vec(
                &r,
                "shopchat_shadow_proxied_total",
                "Requests forwarded to the primary, by route and the primary's status.",
                &["route", "status"],
            ),
            primary_errors: counter(
                &r,
                "shopchat_shadow_primary_errors_total",
                "Requests the primary did not answer completely.",
            ),
            log_dropped: counter(
                &r,
                "shopchat_shadow_log_dropped_total",
                "Mismatch-log records not written because the log is full.",
            ),
            queue_depth: gauge(&r, "shopchat_shadow_queue_depth", "Comparisons waiting in the queue."),
            queue_capacity: gauge(
                &r,
                "shopchat_shadow_queue_capacity",
                "Size of the comparison queue; work beyond it is dropped.",
            ),
            registry: r,
        };
        // Zeros from the start, so a dashboard can tell "none" from "unknown".
        for route in COMPARED_ROUTES {
            for o in Outcome::ALL {
                m.comparisons.with_label_values(&[route, o.as_str()]);
            }
        }
        m
    }

    pub fn outcome(&self, route: &str, outcome: Outcome, deviation: Option<&str>) {
        self.comparisons
            .with_label_values(&[route, outcome.as_str()])
            .inc();
        if let Some(d) = deviation {
            self.expected.with_label_values(&[route, d]).inc();
        }
    }

    pub fn proxied(&self, route: &str, status: u16) {
        self.proxied
            .with_label_values(&[route, &status.to_string()])
            .inc();
    }

    pub fn primary_error(&self) {
        self.primary_errors.inc();
    }

    pub fn log_dropped(&self) {
        self.log_dropped.inc();
    }

    /// Every counter's value now (the mismatch log's `summary` record, replay's report).
    pub fn snapshot(&self) -> Counts {
        Counts {
            outcomes: by_labels(&self.comparisons, "route", "outcome"),
            expected: by_labels(&self.expected, "route", "deviation"),
            proxied: by_labels(&self.proxied, "route", "status"),
            primary_errors: self.primary_errors.get(),
            log_dropped: self.log_dropped.get(),
        }
    }

    /// Comparisons finished or dropped so far (all outcomes).
    pub fn total(&self) -> u64 {
        by_labels(&self.comparisons, "route", "outcome")
            .values()
            .sum()
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        self.queue_depth.set(queue_depth as i64);
        self.queue_capacity.set(queue_capacity as i64);
        crate::ops::metrics::encode(&self.registry)
    }
}

/// A counter family labelled (`first`, `second`) as a map from those label values.
fn by_labels(family: &IntCounterVec, first: &str, second: &str) -> BTreeMap<(String, String), u64> {
    use prometheus::core::Collector;
    let mut out = BTreeMap::new();
    for mf in family.collect() {
        for metric in mf.get_metric() {
            let value_of = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let n = metric.get_counter().get_value() as u64;
            out.insert((value_of(first), value_of(second)), n);
        }
    }
    out
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
            "shopchat_shadow_comparisons_total{outcome=\"expected\",route=\"messages\"} 1\n"
        ));
        assert!(text.contains(
            "shopchat_shadow_comparisons_total{outcome=\"match\",route=\"conversations\"} 0\n"
        ));
        assert!(text
            .contains("shopchat_shadow_expected_total{deviation=\"D1\",route=\"messages\"} 1\n"));
        assert!(text.contains("shopchat_shadow_queue_depth 1\n"));
        assert_eq!(m.total(), 1);
        let counts = m.snapshot();
        assert_eq!(counts.outcomes[&("messages".into(), "expected".into())], 1);
        assert_eq!(counts.expected[&("messages".into(), "D1".into())], 1);
        assert_eq!(counts.proxied[&("messages".into(), "200".into())], 1);
        let json = serde_json::to_string(&m.snapshot()).unwrap();
        let back: Counts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m.snapshot());
    }
}
