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
pub(crate) fn logs() {
    let level = std::env::var("LIGHTCL_SIM_LOG")
        .ok()
        .or_else(|| std::env::var("LIGHTCL_SIM_SEED").ok().map(|_| "lightcl=debug".to_string()));
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
    lightcl_testbed::timing::test_started();
    let histories: u64 =
        std::env::var("LIGHTCL_SIM_HISTORIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seeds: Vec<u64> = match std::env::var("LIGHTCL_SIM_SEED").ok().and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => {
            // Another range than the test command's 0..10,000 explores new histories.
            let first: u64 = std::env::var("LIGHTCL_SIM_FIRST_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (first..first + histories).collect()
        }
    };
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let chunks: Vec<Vec<u64>> =
        (0..threads).map(|t| seeds.iter().copied().skip(t).step_by(threads).collect()).collect();
    let failures: (Vec<String>, u64, [u64; 6]) = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    let mut synced = 0u64;
                    let mut kinds = [0u64; 6];
                    for seed in chunk {
                        let setup = Setup::random(seed);
                        let out = run(&setup);
                        synced += u64::from(out.record.p2p_synced > 0);
                        kinds[0] += u64::from(setup.initial_len >= 400);
                        kinds[1] += u64::from(setup.live_lag.is_some());
                        kinds[2] += u64::from(setup.flaky.is_some());
                        kinds[3] += u64::from(setup.rate_limited.is_some());
                        kinds[4] += u64::from(setup.l1.is_some());
                        kinds[5] += u64::from(setup.requests);
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
                    (failed, synced, kinds)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| (vec!["a history panicked".into()], 0, [0; 6])))
            .fold((Vec::new(), 0, [0u64; 6]), |(mut f, n, mut kinds), (more, k, ks)| {
                f.extend(more);
                for (a, b) in kinds.iter_mut().zip(ks) {
                    *a += b;
                }
                (f, n + k, kinds)
            })
    });
    let (failures, synced, [long, live, flaky, limited, l1, requests]) = failures;
    eprintln!(
        "sim: {} histories in {:.1} s ({synced} bootstrapped partly through the EL's P2P sync, \
         {long} on long chains, {live} judged for liveness during their faults, {flaky} with a \
         flaky source throughout, {limited} with a rate-limiting source, {l1} verifying \
         against a simulated L1, {requests} with Prague execution requests)",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    // The bootstrap path is part of the random histories: a run that never takes it proves
    // nothing about it.
    assert!(seeds.len() < 1_000 || synced * 100 >= seeds.len() as u64, "only {synced} EL syncs");
    // Long chains (where the proof walks run) and liveness during faults too.
    assert!(
        seeds.len() < 1_000
            || (long * 200 >= seeds.len() as u64 && live * 50 >= seeds.len() as u64),
        "only {long} long chains and {live} liveness histories"
    );
    assert!(seeds.len() < 1_000 || l1 * 8 >= seeds.len() as u64, "only {l1} verify against L1");
    assert!(
        seeds.len() < 1_000 || requests * 10 >= seeds.len() as u64,
        "only {requests} with requests"
    );
    assert!(
        failures.is_empty(),
        "{} failing histories (first ones):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// The ten failures the review found, each a history of its own. Every one runs the whole
// follower; the checker inside the simulated EL fails it at the first forkchoice that breaks an
// invariant, and the liveness check at the end demands convergence once the sources heal.

use lightcl::config::{Follow, VerifyMode};
use lightcl::source::quorum::{Quorum, QuorumName};
use lightcl_testbed::sim::el::Profile;
use lightcl_testbed::sim::history::{Event, Prefill};
use lightcl_testbed::sim::source::{Behaviour, Tamper};

fn errors_of(out: &Outcome, source: &str, reason: &str) -> u64 {
    out.sources
        .iter()
        .find(|s| s.name == source)
        .and_then(|s| s.errors.get(reason).copied())
        .unwrap_or(0)
}

fn lies_of(out: &Outcome, source: &str) -> u64 {
    ["bad_block", "inconsistent_chain", "invalid_block"]
        .iter()
        .map(|r| errors_of(out, source, r))
        .sum()
}

/// Case 1: An EL whose head is its finalized block, and a source whose next block does not sit on
/// it: no halt (the quorum holds the same finalized block), the source is blamed.
#[test]
fn case01_no_false_halt_when_head_is_finalized() {
    logs();
    for profile in [Profile::Geth, Profile::OpGeth, Profile::Reth] {
        let setup = Setup {
            profile,
            sources: vec![Behaviour::WrongParent],
            initial_len: 30,
            prefill: Prefill::Honest { head: 10, safe: Some(10), finalized: Some(10) },
            ..Setup::quiet(101)
        };
        let out = check("case01", &setup);
        assert!(!out.halted && out.converged, "{profile:?}: {out:?}");
        assert!(
            errors_of(&out, "s0", "inconsistent_chain") > 0,
            "the source was blamed: {:?}",
            out.sources
        );
    }
}

/// Case 2: Both sources agree on every label, one serves a sibling at the target: the EL never
/// takes a head the quorum did not agree on, and lightcl is not wedged.
#[test]
fn case02_sibling_at_target_is_never_followed() {
    logs();
    for follow in [Follow::Safe, Follow::Latest] {
        let setup = Setup {
            follow,
            sources: vec![Behaviour::Honest, Behaviour::SiblingAtTarget],
            initial_len: 50,
            ..Setup::quiet(102)
        };
        let out = check("case02", &setup);
        assert!(out.converged, "{follow:?}: {out:?}");
        assert!(lies_of(&out, "s1") > 0 && lies_of(&out, "s0") == 0, "{:?}", out.sources);
    }
}

/// Case 3: The EL's label reads fail: finalized is never sent lower than it was (op-geth applies
/// labels even backwards).
#[test]
fn case03_label_read_errors_never_move_finalized_back() {
    logs();
    let setup = Setup {
        profile: Profile::OpGeth,
        initial_len: 40,
        prefill: Prefill::Honest { head: 40, safe: Some(36), finalized: Some(28) },
        events: vec![(0, Event::LabelReadErrors(1.0, 20_000))],
        ..Setup::quiet(103)
    };
    let out = check("case03", &setup);
    assert!(out.converged, "{out:?}");
    assert!(out.record.max_finalized.is_some_and(|f| f.number >= 28), "{out:?}");
}

/// Case 4: Blocks with missing, changed or injected withdrawals never reach the EL, are held
/// against the source that served them, and the block comes from another source meanwhile.
#[test]
fn case04_tampered_withdrawals_are_refused_and_refetched() {
    logs();
    for raw in [false, true] {
        for how in [Tamper::DropWithdrawals, Tamper::ChangeWithdrawal, Tamper::ChangeHeader] {
            let setup = Setup {
                quorum: Quorum::Named(QuorumName::Majority),
                sources: vec![Behaviour::Tamper(how), Behaviour::Honest, Behaviour::Honest],
                initial_len: 60,
                duration_ms: 60_000,
                raw_sources: if raw { 0b111 } else { 0 },
                ..Setup::quiet(104)
            };
            let out = check("case04", &setup);
            assert!(out.converged, "{how:?} raw {raw}: {out:?}");
            assert!(out.head_at_heal >= 60, "caught up while the liar kept lying: {out:?}");
            // A raw block by number claims no hash: a changed header is caught by the chain
            // around it (the block above does not name it) rather than by its own claim.
            let reason =
                if raw && how == Tamper::ChangeHeader { "inconsistent_chain" } else { "bad_block" };
            assert!(errors_of(&out, "s0", reason) > 0, "{how:?} raw {raw}: {:?}", out.sources);
            assert!(lies_of(&out, "s1") + lies_of(&out, "s2") == 0, "{:?}", out.sources);
        }
    }
}

/// Case 14: Prague blocks carry execution requests (deposits, withdrawal requests queued across
/// blocks). A source that tampers with a deposit log or with a queued request's storage is
/// refused and blamed, the blocks come from the others, and the EL gets every block with its own
/// requests (the checker compares each newPayloadV4's list with the world's). A source whose log
/// index lags (eth_getLogs answers nothing) is right by its receipts and never blamed.
#[test]
fn case14_execution_requests_are_rebuilt_and_tampering_is_refused() {
    logs();
    for (how, raw) in [(Tamper::DepositLog, false), (Tamper::QueueSlot, true)] {
        let setup = Setup {
            quorum: Quorum::Named(QuorumName::Majority),
            sources: vec![Behaviour::Tamper(how), Behaviour::Honest, Behaviour::Honest],
            initial_len: 60,
            duration_ms: 60_000,
            raw_sources: if raw { 0b111 } else { 0 },
            requests: true,
            ..Setup::quiet(114)
        };
        let out = check("case14", &setup);
        assert!(out.converged, "{how:?}: {out:?}");
        assert!(out.head_at_heal >= 60, "caught up while the liar kept lying: {out:?}");
        assert!(errors_of(&out, "s0", "bad_block") > 0, "{how:?}: {:?}", out.sources);
        assert_eq!(lies_of(&out, "s1") + lies_of(&out, "s2"), 0, "{:?}", out.sources);
    }
    let setup = Setup {
        sources: vec![Behaviour::LaggingLogIndex],
        initial_len: 60,
        duration_ms: 30_000,
        requests: true,
        ..Setup::quiet(115)
    };
    let out = check("case14", &setup);
    assert!(out.converged, "{out:?}");
    assert_eq!(lies_of(&out, "s0"), 0, "{:?}", out.sources);
}

/// Case 5: Sources agree on a safe block that is not an ancestor of their latest: a forkchoice
/// never carries it (labels are checked by hash, not height).
/// Found by CI on a real op-geth: a single source serves one bad block. Blaming it benched it,
/// so its answers at the heights below were not asked either, the blocks already fed could not
/// be confirmed as agreed, and the head stayed where it was (at genesis) until the block came
/// right. With nobody better to ask, the blocks below the bad one are followed.
#[test]
fn case11_single_source_bad_block_holds_right_below_it() {
    logs();
    for raw in [false, true] {
        for (seed, how) in [(111, Tamper::ChangeHeader), (112, Tamper::DropWithdrawals)] {
            let setup = Setup {
                sources: vec![Behaviour::TamperAt(how, 30)],
                initial_len: 50,
                duration_ms: 20_000,
                raw_sources: u64::from(raw),
                ..Setup::quiet(seed)
            };
            let out = check("case11", &setup);
            assert!(out.converged, "{how:?} raw {raw}: {out:?}");
            assert_eq!(out.head_at_heal, 29, "{how:?} raw {raw}: must hold right below: {out:?}");
            let blamed =
                errors_of(&out, "s0", "bad_block") + errors_of(&out, "s0", "inconsistent_chain");
            assert!(blamed > 0, "{:?}", out.sources);
        }
    }
}

/// Found by the long run (seed 112037): the EL crashed back to genesis after lightcl had
/// finalized block 22, the chain was then rebuilt below finality, and the only source, load
/// balanced over replicas of both chains, answered by number from either. The floor was
/// confirmed by one answer, the refill fed blocks of the other chain, and a head not on the chain
/// through the floor reached the EL before the halt. The chain below the floor is now proven by
/// hash before a refill, and the feed and the gate hold every block and head below the floor to
/// it.
#[test]
fn case12_refill_below_the_floor_follows_only_the_chain_through_it() {
    logs();
    for (seed, profile) in
        [(112_037, Profile::Reth), (112_038, Profile::Geth), (112_039, Profile::OpGeth)]
    {
        let setup = Setup {
            profile,
            sources: vec![Behaviour::Flapping],
            initial_len: 32,
            events: vec![
                (5_829, Event::FinalityReorg),
                (6_345, Event::ElCrash),
                (8_672, Event::ElCrash),
                (11_428, Event::FinalityReorg),
            ],
            duration_ms: 13_484,
            ..Setup::quiet(seed)
        };
        check("case12", &setup);
    }
}

#[test]
fn case05_labels_move_only_to_ancestors_by_hash() {
    logs();
    let setup = Setup {
        follow: Follow::Latest,
        sources: vec![Behaviour::Honest, Behaviour::Honest],
        initial_len: 40,
        events: vec![
            (500, Event::Reorg(6)),
            (1_000, Event::Behave(0, Behaviour::MixedLabels)),
            (1_000, Event::Behave(1, Behaviour::MixedLabels)),
        ],
        duration_ms: 30_000,
        ..Setup::quiet(105)
    };
    check("case05", &setup);
}

/// Case 6: Majority of three with one source down from the start: lightcl starts and follows with
/// the two that answer.
#[test]
fn case06_majority_starts_with_one_source_down() {
    logs();
    let setup = Setup {
        quorum: Quorum::Named(QuorumName::Majority),
        sources: vec![Behaviour::Down, Behaviour::Honest, Behaviour::Honest],
        initial_len: 50,
        duration_ms: 40_000,
        ..Setup::quiet(106)
    };
    let out = check("case06", &setup);
    assert!(out.head_at_heal >= 50, "followed while one source was down: {out:?}");
}

/// Case 7: A replica behind the EL's head says "no block" there: that is not disagreement, and the
/// EL is not rewound to the replica's tip.
#[test]
fn case07_lagging_replica_is_not_disagreement() {
    logs();
    for profile in [Profile::Geth, Profile::OpGeth] {
        let setup = Setup {
            profile,
            follow: Follow::Latest,
            sources: vec![Behaviour::Honest, Behaviour::Lagging(7)],
            initial_len: 50,
            prefill: Prefill::Honest { head: 50, safe: Some(46), finalized: Some(38) },
            duration_ms: 30_000,
            ..Setup::quiet(107)
        };
        let out = check("case07", &setup);
        assert!(out.converged, "{profile:?}: {out:?}");
    }
}

/// Case 9: A divergence hundreds of blocks deep is recovered with at most one prefetch window of
/// blocks held at a time.
#[test]
fn case09_recovery_memory_is_bounded_by_prefetch() {
    logs();
    let setup = Setup {
        profile: Profile::Reth,
        initial_len: 300,
        prefill: Prefill::Rival { keep: 290, extra: 0, finalized: Some(20) },
        prefetch: 8,
        ..Setup::quiet(109)
    };
    // The EL holds the honest chain up to 20 and a branch of its own above it.
    let setup =
        Setup { prefill: Prefill::Rival { keep: 20, extra: 250, finalized: Some(20) }, ..setup };
    let out = check("case09", &setup);
    assert!(out.converged, "{out:?}");
    // Blocks served between two payloads fed: at most a dropped catch-up window and a recovery
    // window, each the prefetch channel plus the requests in flight (the whole 250-block replay
    // was held before).
    assert!(out.max_in_flight <= 2 * (8 + 4), "blocks held at once: {}", out.max_in_flight);
}

/// Case 10: Penalties land on the source that broke the chain, not on the honest one that served
/// the next block, and a source that keeps lying stays benched although it answers quickly.
#[test]
fn case10_the_liar_is_blamed_and_stays_benched() {
    logs();
    // WrongParent: blocks of another chain. SiblingBlocks: each block links to the honest one
    // below it, so the break shows at the next block, served by an honest source.
    for liar in [Behaviour::WrongParent, Behaviour::SiblingBlocks] {
        let setup = Setup {
            quorum: Quorum::Named(QuorumName::Majority),
            sources: vec![Behaviour::Honest, liar, Behaviour::Honest],
            initial_len: 80,
            duration_ms: 60_000,
            // One block per request, so that consecutive blocks come from different sources
            // and a sibling's break shows in the honest source's next block (in batches it
            // mostly shows inside the liar's own batch).
            fetch_batch: 1,
            ..Setup::quiet(110)
        };
        let out = check("case10", &setup);
        assert!(out.converged, "{liar:?}: {out:?}");
        let lies = lies_of(&out, "s1");
        assert!(lies > 0, "{liar:?}: {:?}", out.sources);
        assert_eq!(
            lies_of(&out, "s0") + lies_of(&out, "s2"),
            0,
            "{liar:?}: honest sources blamed: {:?}",
            out.sources
        );
        // Benched for 5 s, then 10, 20, 40: a handful of lies in 60 s, not one per round.
        assert!(lies <= 6, "{liar:?}: the liar was asked again and again ({lies} lies)");
    }
}

/// A log sink for one test.
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs lightcl for 3 s with debug logs captured, against the EL and source `parts` makes (in
/// a runtime, over a small simulated world), configured as `config`; returns the logs and
/// `/status`. For the cases that look for secrets in them.
pub(crate) fn logs_and_status_of(
    config: lightcl::Config,
    parts: impl FnOnce(
        lightcl_testbed::sim::SharedWorld,
    ) -> (
        std::sync::Arc<dyn lightcl::engine::Engine>,
        std::sync::Arc<dyn lightcl::source::Source>,
    ),
) -> (String, String) {
    use std::sync::Arc;

    use lightcl::api::Shared;
    use lightcl::state::StateFile;
    use lightcl_testbed::sim::{World, lock};

    let sink = Captured::default();
    let writer = {
        let sink = sink.clone();
        move || sink.clone()
    };
    let level = lightcl::config::LogConfig {
        format: lightcl::config::LogFormat::Text,
        level: "debug".into(),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(level.filter())
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let shared = Arc::new(Shared::new(&["src".into()], 4));
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let world = Arc::new(std::sync::Mutex::new(World::new(5)));
            let _ = lock(&world).tip();
            let (engine, source) = parts(world);
            let parts = lightcl::Parts::single(
                engine,
                vec![source],
                StateFile::memory(Default::default()),
                Some(shared.clone()),
            );
            let stop = tokio::time::sleep(std::time::Duration::from_secs(3));
            let _ = lightcl::run_with(config, parts, stop).await;
        });
    });
    let logs =
        String::from_utf8_lossy(&sink.0.lock().unwrap_or_else(|p| p.into_inner())).to_string();
    (logs, shared.status_json().to_string())
}

/// Case 8: A source URL with an API key in its path and query: the key reaches neither the logs
/// (debug level, transport errors included) nor `/status`. Real JSON-RPC client, unreachable
/// endpoint, simulated EL.
#[test]
fn case08_secrets_never_reach_logs_or_status() {
    use std::sync::Arc;

    use lightcl::config::SourceEntry;
    use lightcl::source::RpcSource;
    use lightcl_testbed::sim::el::SimEl;

    let key = "k3y0123456789abcdefABCDEF0123456789";
    let url = format!("http://user:pa55word@127.0.0.1:9/v2/{key}?apikey=s3cr3tvalue");
    let entry = SourceEntry::Url(url.clone());
    let config = lightcl::Config {
        chain: lightcl::config::ChainKind::Ethereum,
        chain_id: 1337,
        sources: vec![entry.clone()],
        api: lightcl::config::ApiConfig { listen: String::new(), ready_max_lag_blocks: 4 },
        ..lightcl::Config::default()
    };
    let (logs, status) = logs_and_status_of(config, |world| {
        let el = SimEl::new(world, Profile::Geth, 8);
        let source = RpcSource::new(&entry, std::time::Duration::from_millis(300));
        (Arc::new(el), Arc::new(source))
    });
    assert!(logs.contains("not enough sources"), "the test saw the source fail: {logs}");
    for secret in [key, "s3cr3tvalue", "pa55word"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
        assert!(!status.contains(secret), "{secret} in /status: {status}");
    }
}

// --- bootstrap through the EL's own P2P sync ---------------------------------------------------

use lightcl::api::Mode;
use lightcl::config::Bootstrap;
use lightcl_testbed::sim::el::P2p;

/// A fresh EL 200 blocks behind, with `p2p` peers, bootstrapping in `mode` above 20 blocks.
fn far_behind(seed: u64, profile: Profile, p2p: P2p, mode: Bootstrap) -> Setup {
    Setup {
        profile,
        initial_len: 200,
        p2p: Some(p2p),
        bootstrap: (mode, 20),
        duration_ms: 20_000,
        ..Setup::quiet(seed)
    }
}

const PEERS: P2p = P2p { peers: 3, syncs: true, blocks_per_sec: 40, peers_diverge_at: None };

#[test]
fn bootstrap_el_sync_hands_over_then_replays_the_tip() {
    logs();
    for (seed, profile) in
        [(120_001, Profile::Geth), (120_002, Profile::OpGeth), (120_003, Profile::Reth)]
    {
        for mode in [Bootstrap::Auto, Bootstrap::ElSync] {
            let out = check("bootstrap", &far_behind(seed, profile, PEERS, mode));
            assert!(out.converged, "{profile:?} {mode:?}: {out:?}");
            assert!(out.modes.contains(&Mode::ElSyncing), "{profile:?} {mode:?}: {:?}", out.modes);
            // The EL fetched the bulk itself; lightcl replayed only the tip after the hand-over.
            assert!(out.record.p2p_synced >= 150, "{profile:?} {mode:?}: {:?}", out.record);
            assert!(out.record.payloads < 100, "{profile:?} {mode:?}: {:?}", out.record);
        }
    }
}

#[test]
fn bootstrap_el_that_does_not_sync_falls_back_to_replay() {
    logs();
    let stalls = [
        ("does not sync on a forkchoice", P2p { syncs: false, ..PEERS }),
        ("no peers", P2p { peers: 0, ..PEERS }),
    ];
    for (i, (what, p2p)) in stalls.into_iter().enumerate() {
        let out = check(what, &far_behind(121_000 + i as u64, Profile::Geth, p2p, Bootstrap::Auto));
        assert!(out.converged, "{what}: {out:?}");
        assert_eq!(out.record.p2p_synced, 0, "{what}");
        assert!(out.record.payloads >= 200, "{what}: replayed: {:?}", out.record);
        // With peers that do not sync, the EL sync was tried first; with none, never.
        assert_eq!(out.modes.contains(&Mode::ElSyncing), p2p.peers > 0, "{what}: {:?}", out.modes);
    }
}

#[test]
fn bootstrap_source_head_not_on_the_peers_chain_is_not_synced_from_them() {
    logs();
    // The peers hold the honest chain only up to block 60 and a branch of their own above it:
    // the agreed head lightcl hands the EL is not on their chain, so the EL cannot take it
    // from them; lightcl falls back and the EL ends on the sources' chain (the checker fails
    // any head off it).
    for (seed, profile) in [(122_001, Profile::Geth), (122_002, Profile::Reth)] {
        let p2p = P2p { peers_diverge_at: Some(60), ..PEERS };
        let out = check("peers elsewhere", &far_behind(seed, profile, p2p, Bootstrap::Auto));
        assert!(out.converged, "{profile:?}: {out:?}");
        assert!(out.modes.contains(&Mode::ElSyncing), "{profile:?}: {:?}", out.modes);
        assert_eq!(out.record.p2p_synced, 0, "{profile:?}");
    }
}

mod fleet;
mod review;

/// Case 13: Providers over their plan. A single source at 8 calls per second (far below what a
/// catch-up of 300 blocks asks for) with and without `Retry-After`, and a quorum of two where
/// one of them is: lightcl catches up and follows at the quota's pace, the source is never
/// counted as lying or failing, and the checker holds.
#[test]
fn case13_rate_limited_sources_are_waited_for_never_blamed() {
    logs();
    for (sources, says_when, seed) in
        [(1, true, 113), (1, false, 213), (2, true, 313), (2, false, 413)]
    {
        let setup = Setup {
            sources: vec![Behaviour::Honest; sources],
            initial_len: 300,
            duration_ms: 40_000,
            prefetch: 256,
            rate_limited: Some((sources - 1, 8, says_when)),
            ..Setup::quiet(seed)
        };
        let out = check("case13", &setup);
        let name = format!("s{}", sources - 1);
        assert!(out.converged && !out.halted, "{sources} source(s), {says_when}: {out:?}");
        assert!(errors_of(&out, &name, "rate_limited") > 0, "the plan was never hit: {out:?}");
        assert_eq!(lies_of(&out, &name), 0, "{out:?}");
        for reason in ["timeout", "rpc_error", "malformed"] {
            assert_eq!(errors_of(&out, &name, reason), 0, "{reason}: {out:?}");
        }
    }
}

/// A source of another deployment of the chain id (the right chain id, another genesis block)
/// stops lightcl before anything reaches the EL, whichever source answers first: without a
/// configured genesis the first source names it and the other is refused.
#[test]
fn a_source_with_another_genesis_is_refused_before_any_write() {
    logs();
    for (seed, sources) in [
        (127_001, vec![Behaviour::Honest, Behaviour::OtherGenesis]),
        (127_002, vec![Behaviour::OtherGenesis, Behaviour::Honest]),
    ] {
        let setup = Setup { sources, duration_ms: 5_000, ..Setup::quiet(seed) };
        let out = run(&setup);
        assert!(
            out.violations.iter().any(|v| v.contains("genesis mismatch")),
            "seed {seed}: {:?}",
            out.violations
        );
        assert_eq!((out.record.forkchoices, out.record.payloads), (0, 0), "seed {seed}");
    }
}

/// Verification against L1 (enforce): a lone source whose chain names L1 origins L1 never had
/// gets none of its labels onto the EL (the checker fails any label that moves past a failed
/// origin check), and the EL follows once the source is honest again. In alarm mode the same
/// labels move and the verdict is shown.
#[test]
fn l1_enforce_keeps_labels_off_a_chain_not_built_on_l1() {
    logs();
    for (seed, mode) in [(126_001, VerifyMode::Enforce), (126_002, VerifyMode::Alarm)] {
        let mut setup = Setup {
            sources: vec![Behaviour::FalseOrigins],
            follow: Follow::Safe,
            initial_len: 60,
            duration_ms: 20_000,
            ..Setup::quiet(seed)
        };
        setup.with_l1(mode);
        if mode == VerifyMode::Alarm {
            // Alarm follows the lone source onto its chain: only the verdict is checked here
            // (the invariant checker holds labels to the honest chain, which alarm gives up).
            let out = run(&setup);
            assert!(out.l1_seen.contains(&"finalized:false".to_string()), "{mode:?}: {out:?}");
            continue;
        }
        let out = check("l1 false origins", &setup);
        assert!(out.converged && !out.halted, "{mode:?}: {out:?}");
        // Its finalized blocks name origins L1 finalized otherwise: proven false. Its safe
        // blocks name origins above L1's finalized block: undecided, they wait.
        let seen = &out.l1_seen;
        assert!(seen.contains(&"finalized:false".to_string()), "{mode:?}: {seen:?}");
        assert!(seen.contains(&"safe:pending".to_string()), "{mode:?}: {seen:?}");
        // Once the source is honest, the labels verify and move.
        assert!(seen.contains(&"safe:ok".to_string()), "{mode:?}: {seen:?}");
    }
}

/// A source that calls its safe block finalized: in enforce the EL's finalized label waits for
/// L1 to finalize the origin (the checker fails a finalized label whose origin L1 had not
/// finalized), and L1 reorgs (the L2 chain reorgs with them) are waited out, not halted on.
#[test]
fn l1_enforce_waits_for_l1_finality_and_rides_out_l1_reorgs() {
    logs();
    for (seed, behaviour) in [(126_101, Behaviour::EagerFinal), (126_102, Behaviour::Honest)] {
        let mut setup = Setup {
            sources: vec![behaviour],
            follow: Follow::Latest,
            initial_len: 60,
            duration_ms: 24_000,
            events: vec![
                (4_000, Event::L1Reorg),
                (9_000, Event::L1Reorg),
                (15_000, Event::L1Reorg),
            ],
            ..Setup::quiet(seed)
        };
        setup.with_l1(VerifyMode::Enforce);
        let out = check("l1 finality", &setup);
        assert!(out.converged && !out.halted, "{behaviour:?}: {out:?}");
        assert!(out.l1_seen.contains(&"finalized:ok".to_string()), "{:?}", out.l1_seen);
        if behaviour == Behaviour::EagerFinal {
            assert!(out.l1_seen.contains(&"finalized:pending".to_string()), "{:?}", out.l1_seen);
        }
    }
}
