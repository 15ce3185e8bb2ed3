//! Prometheus metrics: one registry, names as constants, every metric described and zeroed at
//! start, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Local EL head per label (`label` = latest | safe | finalized).
pub const LOCAL_HEAD: &str = "lightcl_local_head_block";
/// Agreed source head per label.
pub const AGREED_HEAD: &str = "lightcl_agreed_head_block";
/// Blocks between the agreed follow target and the local head.
pub const LAG_BLOCKS: &str = "lightcl_lag_blocks";
/// Seconds between now and the local head's timestamp.
pub const LAG_SECONDS: &str = "lightcl_lag_seconds";
/// 1 when a source is usable (not backing off), per `source`.
pub const SOURCE_UP: &str = "lightcl_source_up";
/// Smoothed request latency per `source`.
pub const SOURCE_LATENCY: &str = "lightcl_source_latency_seconds";
/// Source errors per `source` and `reason`.
pub const SOURCE_ERRORS: &str = "lightcl_source_errors_total";
/// Latest height each `source` reports.
pub const SOURCE_HEAD: &str = "lightcl_source_head_block";
/// Answers per `source` that a quorum read stopped waiting for.
pub const SOURCE_LATE: &str = "lightcl_source_late_answers_total";
/// Engine API calls per `method` and `result`.
pub const ENGINE_REQUESTS: &str = "lightcl_engine_requests_total";
/// Seconds spent in Engine API calls per `method` and `result` (sum; divide by the count).
pub const ENGINE_SECONDS: &str = "lightcl_engine_request_seconds_total";
/// 1 when the last call to the EL got an answer.
pub const EL_UP: &str = "lightcl_el_up";
/// Payloads the EL accepted as VALID.
pub const PAYLOADS: &str = "lightcl_payloads_inserted_total";
/// Payloads the EL answered INVALID.
pub const INVALID: &str = "lightcl_payloads_invalid_total";
/// Divergences detected.
pub const DIVERGENCES: &str = "lightcl_divergences_total";
/// Divergences recovered.
pub const RECOVERIES: &str = "lightcl_recoveries_total";
/// Depth of the last recovery.
pub const RECOVERY_DEPTH: &str = "lightcl_last_recovery_depth_blocks";
/// 1 while the EL does not advance past its head although it accepts the blocks above it.
pub const EL_STUCK: &str = "lightcl_el_stuck";
/// 1 while halted on a finalized divergence.
pub const HALTED: &str = "lightcl_halted";
/// 1 when the quorum agrees on all labels, 0 while sources disagree.
pub const SOURCES_AGREE: &str = "lightcl_sources_agree";
/// Blocks per second of the current catch-up batch.
pub const CATCHUP_RATE: &str = "lightcl_catchup_blocks_per_second";
/// Always 1, with the version.
pub const BUILD_INFO: &str = "lightcl_build_info";

const DESCRIPTIONS: [(&str, &str, &str); 23] = [
    (LOCAL_HEAD, "gauge", "Height of the local EL's latest, safe and finalized blocks."),
    (AGREED_HEAD, "gauge", "Height of the blocks the source quorum agrees on, per label."),
    (LAG_BLOCKS, "gauge", "Blocks between the agreed follow target and the local head."),
    (LAG_SECONDS, "gauge", "Seconds between now and the local head block's timestamp."),
    (SOURCE_UP, "gauge", "1 when the source is usable, 0 while it backs off after errors."),
    (SOURCE_LATENCY, "gauge", "Smoothed request latency of the source."),
    (SOURCE_ERRORS, "counter", "Source errors by reason."),
    (SOURCE_HEAD, "gauge", "Latest block height the source reports."),
    (SOURCE_LATE, "counter", "Answers a quorum read stopped waiting for (slower than the grace)."),
    (ENGINE_REQUESTS, "counter", "Engine API and EL JSON-RPC calls by method and result."),
    (ENGINE_SECONDS, "counter", "Seconds spent in EL calls by method and result."),
    (EL_UP, "gauge", "1 when the last call to the EL got an answer."),
    (PAYLOADS, "counter", "Payloads the EL accepted as VALID."),
    (INVALID, "counter", "Payloads the EL answered INVALID."),
    (DIVERGENCES, "counter", "Divergences between the EL and the sources detected."),
    (RECOVERIES, "counter", "Divergences recovered."),
    (RECOVERY_DEPTH, "gauge", "Depth in blocks of the last recovery."),
    (EL_STUCK, "gauge", "1 while the EL does not advance past its head (being repaired)."),
    (HALTED, "gauge", "1 while halted on a finalized divergence (no engine writes)."),
    (SOURCES_AGREE, "gauge", "1 when the source quorum agrees on every label."),
    (CATCHUP_RATE, "gauge", "Blocks per second of the current catch-up."),
    (BUILD_INFO, "gauge", "Always 1; the version is a label."),
    ("lightcl_up", "gauge", "Always 1 while the process serves metrics."),
];

type Key = (&'static str, String);

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<Key, f64>>,
}

/// Renders label pairs: `a="x",b="y"`.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " "))
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Metrics {
    /// A registry with every unlabelled metric and the per-label ones zeroed.
    pub fn new(sources: &[String]) -> Self {
        let m = Self::default();
        for name in [
            LAG_BLOCKS,
            LAG_SECONDS,
            EL_UP,
            PAYLOADS,
            INVALID,
            DIVERGENCES,
            RECOVERIES,
            RECOVERY_DEPTH,
            HALTED,
            EL_STUCK,
            SOURCES_AGREE,
            CATCHUP_RATE,
        ] {
            m.set(name, "", 0.0);
        }
        m.set("lightcl_up", "", 1.0);
        m.set(BUILD_INFO, &labels(&[("version", crate::VERSION)]), 1.0);
        for l in ["latest", "safe", "finalized"] {
            m.set(LOCAL_HEAD, &labels(&[("label", l)]), 0.0);
            m.set(AGREED_HEAD, &labels(&[("label", l)]), 0.0);
        }
        for s in sources {
            let l = labels(&[("source", s)]);
            m.set(SOURCE_UP, &l, 1.0);
            m.set(SOURCE_LATENCY, &l, 0.0);
            m.set(SOURCE_LATE, &l, 0.0);
            m.set(SOURCE_HEAD, &l, 0.0);
        }
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, f64>> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: &str, v: f64) {
        self.lock().insert((name, labels.to_string()), v);
    }

    /// Adds to a counter.
    pub fn add(&self, name: &'static str, labels: &str, v: f64) {
        *self.lock().entry((name, labels.to_string())).or_insert(0.0) += v;
    }

    /// The current value (tests, status).
    pub fn get(&self, name: &'static str, labels: &str) -> Option<f64> {
        self.lock().get(&(name, labels.to_string())).copied()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let values = self.lock();
        let mut out = String::new();
        for (name, kind, help) in DESCRIPTIONS {
            let mut lines = values
                .range((name, String::new())..)
                .take_while(|((n, _), _)| *n == name)
                .peekable();
            if lines.peek().is_none() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((_, l), v) in lines {
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_described_zeroed_metrics() {
        let m = Metrics::new(&["a".to_string()]);
        m.add(PAYLOADS, "", 3.0);
        m.set(LOCAL_HEAD, &labels(&[("label", "safe")]), 42.0);
        let text = m.render();
        assert!(text.contains("# TYPE lightcl_payloads_inserted_total counter\nlightcl_payloads_inserted_total 3\n"), "{text}");
        assert!(text.contains("lightcl_local_head_block{label=\"safe\"} 42"), "{text}");
        assert!(text.contains("lightcl_source_up{source=\"a\"} 1"), "{text}");
        assert!(text.contains("lightcl_halted 0"), "{text}");
        // Every line is a comment or `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("value");
            assert!(name.starts_with("lightcl_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert_eq!(labels(&[("s", "a\"b")]), "s=\"a\\\"b\"");
    }
}
