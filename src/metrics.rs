//! Prometheus metrics on the `prometheus-client` crate: one registry per follower, names as
//! constants, every metric described and zeroed at start, latency as histograms, rendered in the
//! OpenMetrics text format (which Prometheus scrapes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Local EL head per label (`label` = latest | safe | finalized).
pub const LOCAL_HEAD: &str = "lightcl_local_head_block";
/// Agreed source head per label.
pub const AGREED_HEAD: &str = "lightcl_agreed_head_block";
/// Blocks between the agreed follow target and the local head.
pub const LAG_BLOCKS: &str = "lightcl_lag_blocks";
/// Seconds between now and the local head's timestamp.
pub const LAG_SECONDS: &str = "lightcl_lag_seconds";
/// 1 while a source is left alone because it is rate limiting lightcl, per `source`.
pub const SOURCE_RATE_LIMITED: &str = "lightcl_source_rate_limited";
/// Seconds a source was left alone for rate limiting, per `source`.
pub const SOURCE_RATE_LIMITED_SECONDS: &str = "lightcl_source_rate_limited_seconds_total";
/// 1 when a source is usable (not backing off), per `source`.
pub const SOURCE_UP: &str = "lightcl_source_up";
/// Smoothed request latency per `source`.
pub const SOURCE_LATENCY: &str = "lightcl_source_latency_seconds";
/// Request latency per `source`, as a histogram (for p50/p99 panels).
pub const SOURCE_DURATION: &str = "lightcl_source_request_duration_seconds";
/// Source errors per `source` and `reason`.
pub const SOURCE_ERRORS: &str = "lightcl_source_errors_total";
/// Latest height each `source` reports.
pub const SOURCE_HEAD: &str = "lightcl_source_head_block";
/// Answers per `source` that a quorum read stopped waiting for.
pub const SOURCE_LATE: &str = "lightcl_source_late_answers_total";
/// New-head subscriptions of a WebSocket source that ended or skipped heads (each followed by a
/// poll at once, so no block is missed), per `source`.
pub const SOURCE_SUBSCRIPTION_GAPS: &str = "lightcl_source_subscription_gaps_total";
/// Engine API calls per `method` and `result`.
pub const ENGINE_REQUESTS: &str = "lightcl_engine_requests_total";
/// Seconds spent in Engine API calls per `method` and `result` (sum; divide by the count).
pub const ENGINE_SECONDS: &str = "lightcl_engine_request_seconds_total";
/// Engine API and EL JSON-RPC call latency per `method`, as a histogram.
pub const ENGINE_DURATION: &str = "lightcl_engine_request_duration_seconds";
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
/// 1 while the EL syncs from its own P2P peers towards a head lightcl handed it.
pub const EL_SYNCING: &str = "lightcl_el_syncing";
/// The block the EL reports as synced (`eth_syncing` currentBlock, or its head) during an EL sync.
pub const EL_SYNC_BLOCK: &str = "lightcl_el_sync_block";
/// EL syncs given up for replay, per `reason` (stalled, no_peers).
pub const EL_SYNC_FALLBACKS: &str = "lightcl_el_sync_fallbacks_total";
/// Verified blocks received from a source, by format (raw or json).
pub const SOURCE_BLOCKS: &str = "lightcl_source_blocks_total";
/// Prague blocks whose execution requests were rebuilt, by the reads it took.
pub const REQUESTS_REBUILT: &str = "lightcl_execution_requests_rebuilt_total";
/// JSON-RPC calls sent to a source, each call of a batch counted (what a provider bills).
pub const SOURCE_CALLS: &str = "lightcl_source_calls_total";
/// Blocks taken from the held verified blocks instead of fetched from a source again.
pub const HELD_REUSED: &str = "lightcl_held_blocks_reused_total";
/// Verified blocks held for reuse now.
pub const HELD_BLOCKS: &str = "lightcl_held_blocks";
/// Bytes of the verified blocks held for reuse now (about).
pub const HELD_BYTES: &str = "lightcl_held_block_bytes";
/// 1 when the L1 endpoints answered the last read (verification against L1).
pub const L1_UP: &str = "lightcl_l1_up";
/// The highest L2 block verified against L1, per `check`: origin (an agreed label whose L1
/// origin is L1's block) or output (an EL block whose output root matched a root L1 settled).
pub const L1_VERIFIED_BLOCK: &str = "lightcl_l1_verified_block";
/// L1-origin checks of agreed labels, per `label` and `result` (ok, pending, false).
pub const L1_ORIGIN_CHECKS: &str = "lightcl_l1_origin_checks_total";
/// 1 while the agreed label's L1 origin is not verified (pending or false), per `label`.
pub const L1_ORIGIN_UNVERIFIED: &str = "lightcl_l1_origin_unverified";
/// Output roots compared with L1, per `kind` (settled, claim) and `result` (match, mismatch).
pub const L1_OUTPUTS_COMPARED: &str = "lightcl_l1_output_roots_compared_total";
/// Roots L1 holds that differ from the EL's output root now, per `kind` (settled, claim).
pub const L1_OUTPUT_MISMATCHES: &str = "lightcl_l1_output_mismatches";
/// Always 1, with the version.
pub const BUILD_INFO: &str = "lightcl_build_info";
/// Always 1 while the process serves metrics.
pub const UP: &str = "lightcl_up";
/// Gauge per replica: ready for traffic.
pub const REPLICA_READY: &str = "lightcl_replica_ready";
/// Counter: blocks asked for from a fleet's shared fetch, by result.
pub const BLOCK_CACHE: &str = "lightcl_fleet_blocks_total";
/// Counter: forkchoice updates sent to the EL, per `origin` (why lightcl sent it) and
/// `result` (sent: the EL answered; refused: the finality gate sent nothing; failed: no answer).
pub const FORKCHOICE_UPDATES: &str = "lightcl_forkchoice_updates_total";

/// The `origin` label values of [`FORKCHOICE_UPDATES`], zeroed at start.
pub const FORKCHOICE_ORIGINS: [&str; 7] = [
    "reassert",
    "promote",
    "feed_resync",
    "feed_checkpoint",
    "feed_end",
    "recovery_reset",
    "el_sync_hand",
];

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// Name, kind, label names, help (the client adds the final full stop).
#[rustfmt::skip]
const DESCRIPTIONS: [(&str, Kind, &[&str], &str); 46] = [
    (LOCAL_HEAD, Kind::Gauge, &["replica", "label"], "Height of the local EL's latest, safe and finalized blocks"),
    (AGREED_HEAD, Kind::Gauge, &["label"], "Height of the blocks the source quorum agrees on, per label"),
    (LAG_BLOCKS, Kind::Gauge, &["replica"], "Blocks between the agreed follow target and the local head"),
    (LAG_SECONDS, Kind::Gauge, &["replica"], "Seconds between now and the local head block's timestamp"),
    (SOURCE_UP, Kind::Gauge, &["source"], "1 when the source is usable, 0 while it backs off after errors"),
    (SOURCE_LATENCY, Kind::Gauge, &["source"], "Smoothed request latency of the source"),
    (SOURCE_DURATION, Kind::Histogram, &["source"], "Latency of requests to the source, answered or failed"),
    (SOURCE_ERRORS, Kind::Counter, &["source", "reason"], "Source errors by reason"),
    (SOURCE_HEAD, Kind::Gauge, &["source"], "Latest block height the source reports"),
    (SOURCE_LATE, Kind::Counter, &["source"], "Answers a quorum read stopped waiting for (slower than the grace)"),
    (SOURCE_SUBSCRIPTION_GAPS, Kind::Counter, &["source"], "New-head subscriptions that ended or skipped heads (a poll fills them)"),
    (SOURCE_RATE_LIMITED, Kind::Gauge, &["source"], "1 while the source is left alone because it answered that lightcl is over its rate limit (HTTP 429, 503 with Retry-After, JSON-RPC 429 or -32005)"),
    (SOURCE_RATE_LIMITED_SECONDS, Kind::Counter, &["source"], "Seconds the source was left alone for rate limiting"),
    (ENGINE_REQUESTS, Kind::Counter, &["replica", "method", "result"], "Engine API and EL JSON-RPC calls by method and result"),
    (ENGINE_SECONDS, Kind::Counter, &["replica", "method", "result"], "Seconds spent in EL calls by method and result"),
    (ENGINE_DURATION, Kind::Histogram, &["replica", "method"], "Latency of Engine API and EL JSON-RPC calls by method"),
    (EL_UP, Kind::Gauge, &["replica"], "1 when the last call to the EL got an answer"),
    (PAYLOADS, Kind::Counter, &["replica"], "Payloads the EL accepted as VALID"),
    (INVALID, Kind::Counter, &["replica"], "Payloads the EL answered INVALID"),
    (DIVERGENCES, Kind::Counter, &["replica"], "Divergences between the EL and the sources detected"),
    (RECOVERIES, Kind::Counter, &["replica"], "Divergences recovered"),
    (RECOVERY_DEPTH, Kind::Gauge, &["replica"], "Depth in blocks of the last recovery"),
    (EL_STUCK, Kind::Gauge, &["replica"], "1 while the EL does not advance past its head (being repaired)"),
    (HALTED, Kind::Gauge, &["replica"], "1 while halted on a finalized divergence (no engine writes)"),
    (SOURCES_AGREE, Kind::Gauge, &[], "1 when the source quorum agrees on every label"),
    (CATCHUP_RATE, Kind::Gauge, &["replica"], "Blocks per second of the current catch-up"),
    (EL_SYNCING, Kind::Gauge, &["replica"], "1 while the EL syncs from its P2P peers towards the head lightcl handed it"),
    (EL_SYNC_BLOCK, Kind::Gauge, &["replica"], "Block the EL reports as synced during an EL sync"),
    (EL_SYNC_FALLBACKS, Kind::Counter, &["replica", "reason"], "EL syncs given up for replay, by reason"),
    (SOURCE_BLOCKS, Kind::Counter, &["source", "format"], "Verified blocks received from the source, by format (raw: debug_getRawBlock, json: eth_getBlockBy*)"),
    (REQUESTS_REBUILT, Kind::Counter, &["source", "read"], "Prague blocks whose execution requests were rebuilt from the source and matched the header, by the reads it took (logs: eth_getLogs alone; storage: and the queues at the parent; receipts: the block's receipts after the log index fell short; hash_sent: none, the hash was sent in place of the list, send_requests_hash)"),
    (SOURCE_CALLS, Kind::Counter, &["source"], "JSON-RPC calls sent to the source, each call of a batch counted (what a provider bills)"),
    (HELD_REUSED, Kind::Counter, &[], "Blocks taken from the verified blocks held in memory instead of fetched from a source again"),
    (HELD_BLOCKS, Kind::Gauge, &[], "Verified blocks held in memory for reuse (bounded by block_cache_mib)"),
    (HELD_BYTES, Kind::Gauge, &[], "Bytes of the verified blocks held in memory for reuse, about"),
    (L1_UP, Kind::Gauge, &[], "1 when the L1 endpoints answered the last read (verification against L1)"),
    (L1_VERIFIED_BLOCK, Kind::Gauge, &["replica", "check"], "Highest L2 block verified against L1: origin (an agreed label's L1 origin is L1's block) or output (an EL block's output root matched a root L1 settled)"),
    (L1_ORIGIN_CHECKS, Kind::Counter, &["replica", "label", "result"], "L1-origin checks of agreed labels by result (ok, pending: not decided yet, false: not built on this L1)"),
    (L1_ORIGIN_UNVERIFIED, Kind::Gauge, &["replica", "label"], "1 while the agreed label's L1 origin is not verified (in enforce the label waits)"),
    (L1_OUTPUTS_COMPARED, Kind::Counter, &["replica", "kind", "result"], "Output roots of the EL compared with roots L1 holds, by kind (settled, claim) and result (match, mismatch)"),
    (L1_OUTPUT_MISMATCHES, Kind::Gauge, &["replica", "kind"], "Roots L1 holds that differ from the EL's output root at their height, by kind (settled: L1 settled it; claim: an open dispute game)"),
    (BUILD_INFO, Kind::Gauge, &["version"], "Always 1; the version is a label"),
    (UP, Kind::Gauge, &[], "Always 1 while the process serves metrics"),
    (REPLICA_READY, Kind::Gauge, &["replica"], "1 while the replica is ready for traffic (what /readyz/<name> says)"),
    (BLOCK_CACHE, Kind::Counter, &["result"], "Blocks a fleet's replicas asked the shared fetch for: hit (fetched for another replica) or miss (fetched from a source)"),
    (FORKCHOICE_UPDATES, Kind::Counter, &["replica", "origin", "result"], "Forkchoice updates by origin (why lightcl sent it) and result (sent, refused by the finality gate, failed)"),
];

/// A label set as the registry keeps it.
type LabelSet = Vec<(String, String)>;

/// Histogram buckets for request latency: 1 ms to about 33 s, doubling (the source timeout
/// defaults to 10 s, so a hanging source lands in the top buckets, not in +Inf).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

/// One metric: a single series where it has no labels, a family where it has.
#[derive(Debug)]
enum Metric {
    Gauge(FloatGauge),
    Counter(FloatCounter),
    Gauges(Family<LabelSet, FloatGauge>),
    Counters(Family<LabelSet, FloatCounter>),
    Histograms(Family<LabelSet, Histogram, fn() -> Histogram>),
}

/// The registry: families by name, and the registry that renders them.
#[derive(Debug)]
struct Core {
    /// Each metric and the label names it takes.
    families: HashMap<&'static str, (Metric, &'static [&'static str])>,
    registry: Registry,
}

/// The metrics of the process, seen from one replica or from the process as a whole. A handle
/// for a replica adds `replica="<name>"` to the metrics that are per replica (those whose first
/// label is `replica`); the rest (sources, agreement) are shared by the fleet.
#[derive(Debug, Clone)]
pub struct Metrics {
    core: Arc<Core>,
    replica: Option<Arc<str>>,
}

fn owned(pairs: &[(&str, &str)]) -> LabelSet {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Default for Core {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut families = HashMap::new();
        for (name, kind, label_names, help) in DESCRIPTIONS {
            // The client appends `_total` to counter names itself.
            let base = name.trim_end_matches("_total");
            let metric = match (kind, label_names.is_empty()) {
                (Kind::Gauge, true) => {
                    let g = FloatGauge::default();
                    registry.register(name, help, g.clone());
                    Metric::Gauge(g)
                }
                (Kind::Gauge, false) => {
                    let f = Family::<LabelSet, FloatGauge>::default();
                    registry.register(name, help, f.clone());
                    Metric::Gauges(f)
                }
                (Kind::Counter, true) => {
                    let c = FloatCounter::default();
                    registry.register(base, help, c.clone());
                    Metric::Counter(c)
                }
                (Kind::Counter, false) => {
                    let f = Family::<LabelSet, FloatCounter>::default();
                    registry.register(base, help, f.clone());
                    Metric::Counters(f)
                }
                (Kind::Histogram, _) => {
                    let f = Family::<LabelSet, Histogram, fn() -> Histogram>::new_with_constructor(
                        latency_histogram,
                    );
                    registry.register(name, help, f.clone());
                    Metric::Histograms(f)
                }
            };
            families.insert(name, (metric, label_names));
        }
        Self { families, registry }
    }
}

impl Metrics {
    /// A registry with the process-wide metrics and the per-source ones zeroed (the
    /// per-replica ones are zeroed by [`Self::replica`]).
    pub fn new(sources: &[String]) -> Self {
        let m = Self { core: Arc::new(Core::default()), replica: None };
        m.set(SOURCES_AGREE, &[], 0.0);
        m.set(UP, &[], 1.0);
        m.set(BUILD_INFO, &[("version", crate::VERSION)], 1.0);
        for l in ["latest", "safe", "finalized"] {
            m.set(AGREED_HEAD, &[("label", l)], 0.0);
        }
        for result in ["hit", "miss"] {
            m.add(BLOCK_CACHE, &[("result", result)], 0.0);
        }
        m.add(HELD_REUSED, &[], 0.0);
        m.set(HELD_BLOCKS, &[], 0.0);
        m.set(HELD_BYTES, &[], 0.0);
        for s in sources {
            let l = [("source", s.as_str())];
            m.set(SOURCE_UP, &l, 1.0);
            m.set(SOURCE_LATENCY, &l, 0.0);
            m.set(SOURCE_LATE, &l, 0.0);
            m.set(SOURCE_SUBSCRIPTION_GAPS, &l, 0.0);
            m.set(SOURCE_HEAD, &l, 0.0);
            m.add(SOURCE_CALLS, &l, 0.0);
            for format in ["raw", "json"] {
                m.add(SOURCE_BLOCKS, &[("source", s.as_str()), ("format", format)], 0.0);
            }
        }
        m
    }

    /// The handle of replica `name` (sharing this registry), with its metrics zeroed.
    pub fn replica(&self, name: &str) -> Self {
        let m = Self { core: self.core.clone(), replica: Some(name.into()) };
        for metric in [
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
            CATCHUP_RATE,
            REPLICA_READY,
        ] {
            m.set(metric, &[], 0.0);
        }
        for check in ["origin", "output"] {
            m.set(L1_VERIFIED_BLOCK, &[("check", check)], 0.0);
        }
        for label in ["safe", "finalized"] {
            m.set(L1_ORIGIN_UNVERIFIED, &[("label", label)], 0.0);
            for result in ["ok", "pending", "false"] {
                m.add(L1_ORIGIN_CHECKS, &[("label", label), ("result", result)], 0.0);
            }
        }
        for kind in ["settled", "claim"] {
            m.set(L1_OUTPUT_MISMATCHES, &[("kind", kind)], 0.0);
            for result in ["match", "mismatch"] {
                m.add(L1_OUTPUTS_COMPARED, &[("kind", kind), ("result", result)], 0.0);
            }
        }
        for l in ["latest", "safe", "finalized"] {
            m.set(LOCAL_HEAD, &[("label", l)], 0.0);
        }
        for origin in FORKCHOICE_ORIGINS {
            m.add(FORKCHOICE_UPDATES, &[("origin", origin), ("result", "sent")], 0.0);
        }
        m
    }

    /// The replica this handle speaks for, if any.
    pub fn replica_name(&self) -> Option<&str> {
        self.replica.as_deref()
    }

    /// The metric `name` and its full label set: `replica` first for a per-replica metric.
    /// Checks (in debug builds) that the labels are the ones it declares.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<(&Metric, LabelSet)> {
        let (m, names) = self.core.families.get(name)?;
        let mut full = Vec::with_capacity(labels.len() + 1);
        if names.first() == Some(&"replica") && labels.first().is_none_or(|(k, _)| *k != "replica")
        {
            let replica = self.replica.as_deref();
            debug_assert!(
                replica.is_some(),
                "{name} is per replica; set it through a replica's handle"
            );
            full.push(("replica".to_string(), replica.unwrap_or("").to_string()));
        }
        full.extend(owned(labels));
        debug_assert!(
            full.iter().map(|(k, _)| k.as_str()).eq(names.iter().copied()),
            "{name} takes labels {names:?}, got {labels:?}"
        );
        Some((m, full))
    }

    /// Sets a gauge; on a counter, raises it to `v` (a total kept elsewhere, never lowered).
    pub fn set(&self, name: &'static str, labels: &[(&str, &str)], v: f64) {
        let raise = |c: &FloatCounter| {
            let now = c.get();
            if v > now {
                c.inc_by(v - now);
            }
        };
        match self.metric(name, labels) {
            Some((Metric::Gauge(g), _)) => {
                g.set(v);
            }
            Some((Metric::Gauges(f), l)) => {
                f.get_or_create(&l).set(v);
            }
            Some((Metric::Counter(c), _)) => raise(c),
            Some((Metric::Counters(f), l)) => raise(&f.get_or_create(&l)),
            Some((Metric::Histograms(_), _)) | None => {
                debug_assert!(false, "{name} is not a gauge")
            }
        }
    }

    /// Adds to a counter (or a gauge).
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], v: f64) {
        match self.metric(name, labels) {
            Some((Metric::Gauge(g), _)) => {
                g.inc_by(v);
            }
            Some((Metric::Gauges(f), l)) => {
                f.get_or_create(&l).inc_by(v);
            }
            Some((Metric::Counter(c), _)) => {
                c.inc_by(v);
            }
            Some((Metric::Counters(f), l)) => {
                f.get_or_create(&l).inc_by(v);
            }
            Some((Metric::Histograms(_), _)) | None => {
                debug_assert!(false, "{name} is not a counter")
            }
        }
    }

    /// Records one observation (seconds) in a histogram.
    pub fn observe(&self, name: &'static str, labels: &[(&str, &str)], v: f64) {
        match self.metric(name, labels) {
            Some((Metric::Histograms(f), l)) => f.get_or_create(&l).observe(v),
            _ => debug_assert!(false, "{name} is not a histogram"),
        }
    }

    /// The current value of a gauge or counter (tests, status); None for a histogram.
    pub fn get(&self, name: &'static str, labels: &[(&str, &str)]) -> Option<f64> {
        let (m, l) = self.metric(name, labels)?;
        match m {
            Metric::Gauge(g) => Some(g.get()),
            Metric::Counter(c) => Some(c.get()),
            Metric::Gauges(f) => f.get(&l).map(|g| g.get()),
            Metric::Counters(f) => f.get(&l).map(|c| c.get()),
            Metric::Histograms(_) => None,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.core.registry) {
            // Writing into a String cannot fail; say so in the scrape rather than panic.
            return format!("# metrics could not be encoded: {e}\n# EOF\n");
        }
        // A family with no series yet (no source error so far, no EL sync) is still described,
        // so that dashboards and alerts find every name from the first scrape.
        // One pass over the scrape for the families it describes, not one per family.
        let described: std::collections::HashSet<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
            .collect();
        let mut missing = String::new();
        for (name, kind, _, help) in DESCRIPTIONS {
            let (base, kind) = match kind {
                Kind::Gauge => (name, "gauge"),
                Kind::Counter => (name.trim_end_matches("_total"), "counter"),
                Kind::Histogram => (name, "histogram"),
            };
            if !described.contains(base) {
                missing.push_str(&format!("# HELP {base} {help}.\n# TYPE {base} {kind}\n"));
            }
        }
        match out.strip_suffix("# EOF\n") {
            Some(body) => format!("{body}{missing}# EOF\n"),
            None => out + &missing,
        }
    }

    /// The classic Prometheus text format (version 0.0.4), for scrapers that do not ask for
    /// OpenMetrics (curl, `promtool check metrics`, older agents): the same samples, with a
    /// counter's HELP and TYPE under its sample name (`x_total`) and no `# EOF`.
    pub fn render_classic(&self) -> String {
        let counters: Vec<&str> = DESCRIPTIONS
            .iter()
            .filter(|(_, kind, _, _)| *kind == Kind::Counter)
            .map(|(name, ..)| name.trim_end_matches("_total"))
            .collect();
        let mut out = String::new();
        for line in self.render().lines() {
            if line == "# EOF" {
                continue;
            }
            let meta = line.strip_prefix("# HELP ").map(|r| ("HELP", r));
            let meta = meta.or_else(|| line.strip_prefix("# TYPE ").map(|r| ("TYPE", r)));
            match meta.and_then(|(what, rest)| Some((what, rest.split_once(' ')?))) {
                Some((what, (name, tail))) if counters.contains(&name) => {
                    out.push_str(&format!("# {what} {name}_total {tail}\n"));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::render_classic`].
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// The value on the line `series value`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn renders_described_zeroed_metrics_under_their_names() {
        let root = Metrics::new(&["a".to_string()]);
        let m = root.replica("r1");
        m.add(PAYLOADS, &[], 3.0);
        root.replica("r2").add(PAYLOADS, &[], 1.0);
        m.set(LOCAL_HEAD, &[("label", "safe")], 42.0);
        m.set(SOURCE_ERRORS, &[("source", "a"), ("reason", "timeout")], 5.0);
        m.set(SOURCE_ERRORS, &[("source", "a"), ("reason", "timeout")], 4.0);
        let text = m.render();
        assert!(text.contains("# TYPE lightcl_payloads_inserted counter\n"), "{text}");
        // Families without a series yet are described too, before the end marker.
        for (name, ..) in DESCRIPTIONS {
            let base = name.trim_end_matches("_total");
            assert!(text.contains(&format!("# TYPE {base} ")), "{name} undescribed: {text}");
        }
        assert!(text.contains("# TYPE lightcl_el_sync_fallbacks counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1, "{text}");
        assert_eq!(
            value(&text, "lightcl_payloads_inserted_total{replica=\"r1\"}"),
            Some(3.0),
            "{text}"
        );
        assert_eq!(value(&text, "lightcl_payloads_inserted_total{replica=\"r2\"}"), Some(1.0));
        assert_eq!(
            value(&text, "lightcl_local_head_block{replica=\"r1\",label=\"safe\"}"),
            Some(42.0)
        );
        assert_eq!(value(&text, "lightcl_sources_agree"), Some(0.0));
        assert_eq!(value(&text, "lightcl_source_up{source=\"a\"}"), Some(1.0));
        assert_eq!(value(&text, "lightcl_halted{replica=\"r2\"}"), Some(0.0));
        // A counter set from a total elsewhere never goes down.
        assert_eq!(
            value(&text, "lightcl_source_errors_total{source=\"a\",reason=\"timeout\"}"),
            Some(5.0),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        let classic = m.render_classic();
        assert!(classic.contains("# TYPE lightcl_payloads_inserted_total counter\n"), "{classic}");
        assert!(classic.contains("# HELP lightcl_payloads_inserted_total Payloads"), "{classic}");
        assert_eq!(value(&classic, "lightcl_payloads_inserted_total{replica=\"r1\"}"), Some(3.0));
        assert!(!classic.contains("# EOF"), "{classic}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = line.rsplit_once(' ').expect("value");
            assert!(name.starts_with("lightcl_"), "{line}");
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn latency_histograms_bucket_observations() {
        let m = Metrics::new(&[]).replica("el");
        for ms in [2.0, 3.0, 40.0, 9000.0] {
            m.observe(ENGINE_DURATION, &[("method", "engine_newPayloadV4")], ms / 1e3);
        }
        let text = m.render();
        let series = |le: &str| {
            format!(
                "lightcl_engine_request_duration_seconds_bucket{{le=\"{le}\",replica=\"el\",method=\"engine_newPayloadV4\"}}"
            )
        };
        assert_eq!(value(&text, &series("0.004")), Some(2.0), "{text}");
        assert_eq!(value(&text, &series("0.064")), Some(3.0), "{text}");
        assert_eq!(value(&text, &series("+Inf")), Some(4.0), "{text}");
        assert_eq!(
            value(
                &text,
                "lightcl_engine_request_duration_seconds_count{replica=\"el\",method=\"engine_newPayloadV4\"}"
            ),
            Some(4.0)
        );
    }
}
