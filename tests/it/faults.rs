//! Faults an operator meets (issue 10), at the cheapest layer that shows each: a hanging source
//! must not set the pace of the quorum, and every fault is visible by name in the log and in
//! `/status`. Simulation where the behaviour is lightcl's logic; a real JSON-RPC client against
//! a local HTTP endpoint for failure reasons.

use std::sync::{Arc, Mutex};

use lightcl::config::Follow;
use lightcl::source::quorum::{Quorum, QuorumName};
use lightcl_testbed::sim::history::{Outcome, Setup, run};
use lightcl_testbed::sim::source::Behaviour;

/// Log lines written during a test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).to_string()
    }
}

/// Runs `f` with lightcl's log (at `level`) captured.
fn logged<T>(level: &str, f: impl FnOnce() -> T) -> (T, String) {
    let sink = Captured::default();
    let writer = {
        let sink = sink.clone();
        move || sink.clone()
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(level)
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, sink.text())
}

/// Runs a history and fails on any violation.
fn check(name: &str, setup: &Setup) -> Outcome {
    let out = run(setup);
    assert!(out.violations.is_empty(), "{name} (seed {}): {:?}", setup.seed, out.violations);
    out
}

fn source<'a>(out: &'a Outcome, name: &str) -> &'a lightcl::api::SourceStatus {
    out.sources.iter().find(|s| s.name == name).expect("source in status")
}

/// Three sources, `majority`, a block a second: one source hanging on 30 % of requests for its
/// 10 s timeout adds at most one poll interval (one block here) to the largest lag, measured
/// side by side with the same history without the hang.
#[test]
fn hanging_source_does_not_set_the_pace() {
    let calm = Setup {
        sources: vec![Behaviour::Honest; 3],
        quorum: Quorum::Named(QuorumName::Majority),
        follow: Follow::Latest,
        block_ms: 1_000,
        initial_len: 20,
        duration_ms: 90_000,
        ..Setup::quiet(1010)
    };
    let hung = Setup { hang: Some((0.3, 10_000)), ..calm.clone() };
    let a = check("calm", &calm);
    let b = check("hanging", &hung);
    eprintln!("largest lag: {} blocks calm, {} blocks with a hanging source", a.max_lag, b.max_lag);
    assert!(a.converged && b.converged, "{a:?}\n{b:?}");
    assert!(
        b.max_lag <= a.max_lag + 1,
        "the hanging source set the pace: lag {} blocks against {} without it",
        b.max_lag,
        a.max_lag
    );
    let s2 = source(&b, "s2");
    assert!(s2.late_answers > 0, "the hanging source is shown as late: {s2:?}");
}
