//! `shopchat shadow report FILE`: a per-route summary of a mismatch log
//! that a person can read in a minute (also printed at the end of replay).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::shadow::compare::Outcome;
use crate::shadow::metrics::Counts;

/// What a log holds: the last summary and the detail records.
#[derive(Debug, Default)]
pub struct LogContents {
    pub summary: Option<Counts>,
    pub summary_time: Option<String>,
    pub details: Vec<Value>,
    pub unreadable_lines: usize,
}

pub fn read_log(path: &Path) -> anyhow::Result<LogContents> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = LogContents::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            out.unreadable_lines += 1;
            continue;
        };
        if v["kind"] == "summary" {
            match serde_json::from_value::<Counts>(v["counts"].clone()) {
                Ok(c) => {
                    out.summary = Some(c);
                    out.summary_time = v["time"].as_str().map(String::from);
                }
                Err(_) => out.unreadable_lines += 1,
            }
        } else {
            out.details.push(v);
        }
    }
    Ok(out)
}

/// The report text; `source` names the log.
pub fn render(source: &str, log: &LogContents) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "shadow report: {source} ({} detail records{})",
        log.details.len(),
        match &log.summary_time {
            Some(t) => format!(", counters as of {t}"),
            None => ", no summary record: counts from detail records only".into(),
        }
    );
    // route → outcome → count
    let mut table: BTreeMap<String, BTreeMap<Outcome, u64>> = BTreeMap::new();
    match &log.summary {
        Some(counts) => {
            for ((route, outcome), n) in &counts.outcomes {
                if let Some(o) = Outcome::parse(outcome) {
                    *table
                        .entry(route.clone())
                        .or_default()
                        .entry(o)
                        .or_default() += n;
                }
            }
        }
        None => {
            for d in &log.details {
                if let (Some(route), Some(o)) = (
                    d["route"].as_str(),
                    d["kind"].as_str().and_then(Outcome::parse),
                ) {
                    *table.entry(route.into()).or_default().entry(o).or_default() += 1;
                }
            }
        }
    }
    table.retain(|_, row| row.values().any(|n| *n > 0));
    let _ = writeln!(
        out,
        "\n{:<22}{:>9}{:>9}{:>10}{:>10}{:>8}{:>9}",
        "route", "compared", "match", "mismatch", "expected", "error", "dropped"
    );
    let mut totals: BTreeMap<Outcome, u64> = BTreeMap::new();
    for (route, row) in &table {
        line(&mut out, route, row, log.summary.is_some());
        for (o, n) in row {
            *totals.entry(*o).or_default() += n;
        }
    }
    if table.is_empty() {
        let _ = writeln!(out, "(nothing compared)");
    } else {
        line(&mut out, "total", &totals, log.summary.is_some());
    }

    // Expected, by deviation.
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    match &log.summary {
        Some(c) => expected = c.expected.clone(),
        None => {
            for d in log.details.iter().filter(|d| d["kind"] == "expected") {
                *expected
                    .entry((
                        d["route"].as_str().unwrap_or("?").into(),
                        d["deviation"].as_str().unwrap_or("?").into(),
                    ))
                    .or_default() += 1;
            }
        }
    }
    if !expected.is_empty() {
        let _ = writeln!(out, "\nexpected (deliberate deviations, COMPAT §9):");
        for ((route, dev), n) in &expected {
            let _ = writeln!(out, "  {route:<22}{dev:<18}{n:>6}");
        }
    }

    for (kind, title) in [
        ("mismatch", "mismatches by first difference"),
        ("error", "errors"),
    ] {
        let mut groups: BTreeMap<(String, String), (u64, String)> = BTreeMap::new();
        for d in log.details.iter().filter(|d| d["kind"] == kind) {
            let route = d["route"].as_str().unwrap_or("?").to_string();
            let first = d["differences"][0].as_str().unwrap_or("?").to_string();
            let example = format!(
                "{} {}",
                d["method"].as_str().unwrap_or("?"),
                d["path"].as_str().unwrap_or("?")
            );
            let g = groups.entry((route, first)).or_insert((0, example));
            g.0 += 1;
        }
        if groups.is_empty() {
            continue;
        }
        let mut sorted: Vec<_> = groups.into_iter().collect();
        sorted.sort_by_key(|g| std::cmp::Reverse(g.1 .0));
        let _ = writeln!(out, "\n{title} (logged; most frequent first):");
        for ((route, first), (n, example)) in sorted.iter().take(20) {
            let _ = writeln!(out, "  {route:<22}{n:>5}×  {}", cut(first, 160));
            let _ = writeln!(out, "  {:<29}e.g. {}", "", cut(example, 120));
        }
        if sorted.len() > 20 {
            let _ = writeln!(out, "  … {} more groups", sorted.len() - 20);
        }
    }
    if let Some(c) = &log.summary {
        if c.primary_errors > 0 || c.log_dropped > 0 {
            let _ = writeln!(
                out,
                "\nprimary errors: {}   log records dropped (log full): {}",
                c.primary_errors, c.log_dropped
            );
        }
    }
    if log.unreadable_lines > 0 {
        let _ = writeln!(out, "\n{} unreadable lines skipped", log.unreadable_lines);
    }
    let mismatches = totals.get(&Outcome::Mismatch).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "\nverdict: {}",
        if mismatches == 0 {
            "no unexpected mismatch".to_string()
        } else {
            format!("{mismatches} unexpected mismatch(es) — see the records of kind \"mismatch\"")
        }
    );
    out
}

fn line(out: &mut String, route: &str, row: &BTreeMap<Outcome, u64>, have_matches: bool) {
    let n = |o: Outcome| row.get(&o).copied().unwrap_or(0);
    let compared: u64 = row.values().sum();
    let matches = if have_matches {
        n(Outcome::Match).to_string()
    } else {
        "-".into()
    };
    let _ = writeln!(
        out,
        "{:<22}{:>9}{:>9}{:>10}{:>10}{:>8}{:>9}",
        route,
        if have_matches {
            compared.to_string()
        } else {
            "-".into()
        },
        matches,
        n(Outcome::Mismatch),
        n(Outcome::Expected),
        n(Outcome::Error),
        n(Outcome::Dropped)
    );
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::metrics::Metrics;

    #[test]
    fn renders_routes_deviations_and_groups() {
        let m = Metrics::new();
        m.outcome("messages", Outcome::Match, None);
        m.outcome("messages", Outcome::Expected, Some("D1"));
        m.outcome("messages", Outcome::Mismatch, None);
        let log = LogContents {
            summary: Some(m.snapshot()),
            summary_time: Some("t".into()),
            details: vec![serde_json::json!({
                "kind": "mismatch", "route": "messages", "method": "GET",
                "path": "/api/v2/chat/messages/1", "differences": ["body $.data[0].id: 1 vs 2"]
            })],
            unreadable_lines: 0,
        };
        let text = render("x.jsonl", &log);
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("messages "))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(row, ["messages", "3", "1", "1", "1", "0", "0"], "{text}");
        assert!(text.contains("D1"));
        assert!(text.contains("1×  body $.data[0].id: 1 vs 2"));
        assert!(text.contains("verdict: 1 unexpected mismatch"));
    }
}
