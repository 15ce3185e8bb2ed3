//! The paths around the safety core that an independent review found (issue 21), each a history
//! of its own through lightcl's real follower. Each failed on the code before the fix; each has
//! a mutant in scripts/sim-mutants.py that puts the bug back.

use lightcl::config::Bootstrap;
use lightcl::source::quorum::{Quorum, QuorumName};
use lightcl_testbed::sim::el::{P2p, Profile};
use lightcl_testbed::sim::history::{Event, Outcome, Prefill, Setup, run};
use lightcl_testbed::sim::source::Behaviour;

use super::logs;

fn violations(what: &str, setup: &Setup, out: &Outcome) -> String {
    format!(
        "{what} (seed {}): {:?}\nsetup: {setup:?}\nhalted: {:?}\nrecord: {:?}",
        setup.seed, out.violations, out.halted_why, out.record
    )
}

const PEERS: P2p = P2p { peers: 3, syncs: true, blocks_per_sec: 200, peers_diverge_at: None };

/// Case 1: lightcl finalized #180 in an earlier run; the EL is far behind it, or holds it; the
/// sources' chain was rebuilt from #100 (a finalized divergence), and the only source is load
/// balanced over replicas of both chains. The agreed head is more than a thousand blocks above
/// #180, beyond the old proof walk's reach. The EL must never be handed a chain that does not
/// pass through #180 (the checker's I2/I3), and lightcl must halt on the divergence.
#[test]
fn review01_bootstrap_never_crosses_finality_over_a_load_balanced_source() {
    logs();
    let profiles = [Profile::Geth, Profile::OpGeth, Profile::Reth];
    let mut halted = 0;
    for seed in 0..12u64 {
        let prefill = if seed % 2 == 0 {
            Prefill::Honest { head: 180, safe: Some(180), finalized: Some(180) }
        } else {
            Prefill::Genesis
        };
        let setup = Setup {
            profile: profiles[(seed / 2 % 3) as usize],
            sources: vec![Behaviour::Flapping],
            initial_len: 1_300,
            prefill,
            initial_floor: Some(180),
            events: vec![(0, Event::Rebuild(100))],
            p2p: Some(PEERS),
            bootstrap: (Bootstrap::Auto, 20),
            duration_ms: 20_000,
            heal_ms: 120_000,
            ..Setup::quiet(210_000 + seed)
        };
        let out = run(&setup);
        assert!(out.violations.is_empty(), "{}", violations("review01", &setup, &out));
        halted += u32::from(out.halted);
    }
    assert_eq!(halted, 12, "every history ends in the finalized-divergence halt");
}

/// Case 2: op-geth or geth back from a crash in snap-sync mode ignores every payload; the repair
/// rolls it back with debug_setHead, never below the finalized block lightcl sent (the checker
/// flags any roll-back of an EL that holds it), and halts naming the runbook when that is not
/// enough.
#[test]
fn review02_stuck_el_repair_never_rolls_below_finality() {
    logs();
    let mut at_floor = 0;
    for seed in 1_300..1_340u64 {
        // op-geth keeps the blocks above its state: its head can stay at or above the floor.
        let profile = if seed % 4 == 0 { Profile::Geth } else { Profile::OpGeth };
        let setup = Setup {
            profile,
            initial_len: 60,
            events: vec![(3_000, Event::ElCrashIntoSnapSync)],
            ..Setup::quiet(seed)
        };
        let out = run(&setup);
        assert_eq!(
            out.violations,
            vec!["halted without a finalized divergence".to_string()],
            "{}",
            violations("review02", &setup, &out)
        );
        let why = out.halted_why.clone().unwrap_or_default();
        assert!(why.contains("EL stuck below the blocks it accepted"), "seed {seed}: {why}");
        at_floor += u32::from(why.contains("finality floor"));
    }
    assert!(at_floor > 0, "some histories reached the floor with their roll-backs");
}

/// Case 3: majority of three, one honest source 300 ms away, one fast source whose labels are
/// out of order, one near honest source. The quorum read must wait for the far honest source
/// while the answers in hand cannot decide, so lightcl follows during the faults.
#[test]
fn review03_majority_follows_with_a_far_honest_source() {
    logs();
    for seed in [230_001, 230_002, 230_003] {
        let setup = Setup {
            quorum: Quorum::Named(QuorumName::Majority),
            sources: vec![Behaviour::Honest, Behaviour::LabelLies, Behaviour::Honest],
            slow_ms: 300,
            initial_len: 50,
            duration_ms: 40_000,
            ..Setup::quiet(seed)
        };
        let out = run(&setup);
        assert!(out.violations.is_empty(), "{}", violations("review03", &setup, &out));
        // Following safe: the honest safe block is 4 below the tip, and a block comes every 2 s.
        assert!(out.head_at_heal >= 60, "followed during the faults: {out:?}");
        assert!(out.max_lag <= 12, "kept up during the faults: lag {}", out.max_lag);
    }
}

/// Case 6a: bootstrap's proof walk under a flaky single source (1 % of requests fail): the walk
/// resumes where it stopped, so the EL is handed the head and syncs; or `auto` falls back to
/// replay. Either way the EL moves during the faults.
#[test]
fn review06a_bootstrap_walk_progresses_with_a_flaky_source() {
    logs();
    for (seed, profile) in [(260_001, Profile::Geth), (260_002, Profile::OpGeth)] {
        let setup = Setup {
            profile,
            initial_len: 1_000,
            prefill: Prefill::Honest { head: 50, safe: Some(50), finalized: Some(50) },
            error_rate: 0.01,
            p2p: Some(PEERS),
            bootstrap: (Bootstrap::Auto, 20),
            duration_ms: 120_000,
            ..Setup::quiet(seed)
        };
        let out = run(&setup);
        assert!(out.violations.is_empty(), "{}", violations("review06a", &setup, &out));
        assert!(out.head_at_heal >= 900, "{profile:?}: the EL moved under the faults: {out:?}");
    }
}

/// Case 6b: the EL crashed back to genesis after lightcl finalized #988; the proof of the chain
/// through the floor (988 blocks by parent hash) completes under a flaky single source, and the
/// refill follows it.
#[test]
fn review06b_refill_proof_progresses_with_a_flaky_source() {
    logs();
    for seed in [261_001, 261_002] {
        let setup = Setup {
            profile: Profile::Geth,
            initial_len: 1_000,
            prefill: Prefill::Honest { head: 995, safe: Some(990), finalized: Some(988) },
            initial_floor: Some(988),
            error_rate: 0.01,
            events: vec![(500, Event::ElCrash)],
            duration_ms: 120_000,
            ..Setup::quiet(seed)
        };
        let out = run(&setup);
        assert!(out.violations.is_empty(), "{}", violations("review06b", &setup, &out));
        assert!(out.head_at_heal >= 900, "refilled under the faults: {out:?}");
    }
}

/// Case 4: an EL URL with a key in its path and query (an authenticating proxy in front of a
/// remote EL), unreachable: the key reaches neither the logs (debug level) nor `/status`.
#[test]
fn review04_engine_url_secrets_never_reach_logs_or_status() {
    use std::sync::Arc;

    use lightcl::config::{EngineConfig, SourceEntry};
    use lightcl::engine::EngineClient;
    use lightcl_testbed::sim::source::SimSource;

    let key = "k3y0123456789abcdefABCDEF0123456789";
    let url = format!("http://user:pa55word@127.0.0.1:9/v2/{key}?apikey=s3cr3tvalue");
    let dir = tempfile::tempdir().expect("tempdir");
    let jwt = dir.path().join("jwt.hex");
    std::fs::write(&jwt, "11".repeat(32)).expect("jwt");
    let engine = EngineConfig {
        url: url.clone(),
        jwt_secret_file: jwt,
        rpc_url: url.replace("/v2/", "/rpc/"),
        new_payload_timeout_ms: 500,
        forkchoice_timeout_ms: 500,
        call_timeout_ms: 500,
    };
    let config = lightcl::Config {
        chain: lightcl::config::ChainKind::Ethereum,
        chain_id: 1337,
        sources: vec![SourceEntry::Url("http://sim0".into())],
        engine: engine.clone(),
        api: lightcl::config::ApiConfig { listen: String::new(), ready_max_lag_blocks: 4 },
        ..lightcl::Config::default()
    };
    let (logs, status) = super::logs_and_status_of(config, |world| {
        let client = EngineClient::new(&engine).expect("client");
        (Arc::new(client), Arc::new(SimSource::new(world, "src", Behaviour::Honest, 1)))
    });
    assert!(logs.contains("127.0.0.1:9"), "the test saw the EL fail: {logs}");
    for secret in [key, "s3cr3tvalue", "pa55word"] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
        assert!(!status.contains(secret), "{secret} in /status: {status}");
    }
}

mod fleet {
    use lightcl::config::{Bootstrap, LabelMode};
    use lightcl_testbed::sim::el::Profile;
    use lightcl_testbed::sim::fleet::{FleetSetup, run_fleet};

    use super::PEERS;

    /// Three replicas under `labels = "lockstep"`, one slow (it counts: ready however far
    /// behind), `what` set up by the caller.
    fn lockstep(seed: u64) -> FleetSetup {
        let mut setup = FleetSetup::healthy(seed, &[Profile::Geth, Profile::OpGeth, Profile::Reth]);
        setup.labels = LabelMode::Lockstep;
        setup.watch_lockstep = true;
        setup.ready_max_lag = 100_000;
        setup.replicas[0].payload_ms = 30;
        setup
    }

    /// Case 5: a replica that bootstraps by EL sync is handed labels within the lockstep cap:
    /// never a safe or finalized block a ready replica does not hold yet.
    #[test]
    fn review05_lockstep_holds_at_the_el_sync_hand_over() {
        super::logs();
        for seed in [250_001, 250_002, 250_003] {
            let mut setup = lockstep(seed);
            // The replaying replica is far slower than the EL syncs of the other two, which go
            // down for 20 s once it is ready and counts: they come back more than the
            // bootstrap gap behind and sync from their peers, while it is still far below.
            setup.replicas[0].payload_ms = 300;
            setup.settle_ms = 150_000;
            setup.duration_ms = 30_000;
            for r in 1..3 {
                setup.replicas[r].p2p = Some(PEERS);
                setup.replicas[r].outage = Some((4_000, 20_000));
            }
            setup.bootstrap = (Bootstrap::Auto, 20);
            let out = run_fleet(&setup);
            assert!(out.violations.is_empty(), "seed {seed}: {:#?}", out.violations);
            assert!(out.lockstep_checks > 0, "the watch saw labels move: {out:?}");
        }
    }

    /// Seen in review: lockstep compared heights, not hashes, so after a reorg at the tip a
    /// ready replica still on the old branch counted as holding the new safe block. The watch
    /// checks by hash; reorgs come while the slow replica lags.
    #[test]
    fn review_lockstep_counts_blocks_by_hash_after_tip_reorgs() {
        super::logs();
        for seed in [251_001, 251_002, 251_003] {
            let mut setup = lockstep(seed);
            setup.initial_len = 40;
            setup.duration_ms = 30_000;
            // Slower than the chain (a block takes longer than a block time), so that it falls
            // behind and, after a reorg, is still feeding the old branch, ready, when the
            // others move their labels onto the new one.
            setup.replicas[0].payload_ms = 600;
            setup.settle_ms = 150_000;
            setup.reorgs = (0..8).map(|k| (10_000 + k * 2_300, 3 + k % 4)).collect();
            let out = run_fleet(&setup);
            assert!(out.violations.is_empty(), "seed {seed}: {:#?}", out.violations);
            assert!(out.lockstep_checks > 0, "the watch saw labels move: {out:?}");
        }
    }
}
