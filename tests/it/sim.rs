//! Simulation tests: lightcl's real follower loop against the simulated EL and sources of the
//! test bed (`lightcl_testbed::sim`), on a paused clock. The invariant checker inside the
//! simulated EL sees every forkchoice; the liveness check at the end of each history demands
//! convergence once the sources heal, and a halt only on a real finalized divergence.
//!
//! Replay one random history: `LIGHTCL_SIM_SEED=<seed> cargo test --test it sim::random -- --nocapture`
//! Run many more: `LIGHTCL_SIM_HISTORIES=1000000 cargo test --release --test it sim::random`

use lightcl_testbed::sim::history::{Outcome, Setup, run};

/// Logs to the test's output when one seed is replayed (`LIGHTCL_SIM_SEED`) or asked for
/// (`LIGHTCL_SIM_LOG=debug`).
fn logs() {
    let level = std::env::var("LIGHTCL_SIM_LOG").ok().or_else(|| {
        std::env::var("LIGHTCL_SIM_SEED").ok().map(|_| "lightcl=debug".to_string())
    });
    if let Some(level) = level {
        let _ = tracing_subscriber::fmt().with_env_filter(level).with_test_writer().try_init();
    }
}

/// Runs `setup`, failing with its seed and the replay command when anything was violated.
fn check(name: &str, setup: &Setup) -> Outcome {
    let out = run(setup);
    assert!(
        out.violations.is_empty(),
        "{name} (seed {}): {} violation(s):\n  {}\nsetup: {setup:?}\nreplay: LIGHTCL_SIM_SEED={} cargo test --test it sim::random -- --nocapture",
        setup.seed,
        out.violations.len(),
        out.violations.join("\n  "),
        setup.seed
    );
    out
}

#[test]
fn quiet_history_converges() {
    logs();
    let out = check("quiet", &Setup::quiet(1));
    assert!(out.converged && !out.halted, "{out:?}");
    assert!(out.record.payloads >= 30, "blocks were fed: {out:?}");
}

#[test]
fn random() {
    logs();
    let histories: u64 = std::env::var("LIGHTCL_SIM_HISTORIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seeds: Vec<u64> = match std::env::var("LIGHTCL_SIM_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..histories).collect(),
    };
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let chunks: Vec<Vec<u64>> = (0..threads).map(|t| seeds.iter().copied().skip(t).step_by(threads).collect()).collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    for seed in chunk {
                        let setup = Setup::random(seed);
                        let out = run(&setup);
                        if !out.violations.is_empty() {
                            failed.push(format!(
                                "seed {seed}: {}\n    setup: {setup:?}\n    replay: LIGHTCL_SIM_SEED={seed} cargo test --test it sim::random -- --nocapture",
                                out.violations.join("; ")
                            ));
                            if failed.len() >= 5 {
                                break;
                            }
                        }
                    }
                    failed
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|_| vec!["a history panicked".into()])).collect()
    });
    eprintln!("sim: {} histories in {:.1} s", seeds.len(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} failing histories (first ones):\n{}", failures.len(), failures.join("\n"));
}
