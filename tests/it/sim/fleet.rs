//! Fleet simulation: one lightcl driving several simulated replica ELs (lightcl's real follower
//! loops against simulated ELs and sources, on a paused clock). Each EL's checker holds I1-I5;
//! the fleet watch holds the lockstep rule; the sources count what one and three replicas cost.

use lightcl::config::LabelMode;
use lightcl_testbed::sim::el::Profile;
use lightcl_testbed::sim::fleet::{FleetOutcome, FleetSetup, ReplicaSetup, run_fleet};

fn passed(what: &str, out: &FleetOutcome) {
    assert!(out.violations.is_empty(), "{what}: {:#?}", out.violations);
}

const THREE: [Profile; 3] = [Profile::Geth, Profile::OpGeth, Profile::Reth];

/// Three replicas cost the sources what one does: each block is fetched once (the shared fetch)
/// and the label reads of replicas that poll together coalesce.
#[test]
fn three_replicas_fetch_each_block_once() {
    for (seed, raw) in [(140_001, true), (140_002, false)] {
        let one = run_fleet(&FleetSetup { raw, ..FleetSetup::healthy(seed, &THREE[..1]) });
        let three = run_fleet(&FleetSetup { raw, ..FleetSetup::healthy(seed, &THREE) });
        passed("one", &one);
        passed("three", &three);
        println!(
            "raw={raw}: tip {}; one replica: {} blocks, {} label reads, {} hash reads; three: {} \
             blocks, {} label reads, {} hash reads; payloads per replica {:?}",
            three.tip,
            one.blocks_served,
            one.label_reads,
            one.hash_reads,
            three.blocks_served,
            three.label_reads,
            three.hash_reads,
            three.payloads
        );
        assert!(one.blocks_served >= one.tip, "one replica fetched every block: {one:?}");
        // Each block once, give or take the block above each round (fetched as a voucher) and
        // the refetches after a claim expired.
        let bound = one.blocks_served + one.blocks_served / 10 + 20;
        assert!(three.blocks_served <= bound, "raw={raw}: {three:?} against {one:?}");
        assert!(three.payloads.iter().all(|p| *p >= three.tip), "{three:?}");
        assert!(three.label_reads < one.label_reads * 2, "raw={raw}: {three:?} against {one:?}");
    }
}

/// A replica that dies for good, one that is down for a while and a slow one: none holds back the
/// others; the one that comes back catches up.
#[test]
fn a_down_or_slow_replica_never_holds_back_the_others() {
    for seed in [141_001, 141_002] {
        let mut setup = FleetSetup::healthy(seed, &THREE);
        setup.replicas[0].payload_ms = 40;
        setup.replicas[1].dies_at = Some(2_000);
        setup.replicas[2].outage = Some((3_000, 5_000));
        let out = run_fleet(&setup);
        passed("down and slow", &out);
        assert_eq!(out.converged, [true, false, true], "{out:?}");
    }
}

/// A replica that starts on another branch is recovered alone; the others just follow.
#[test]
fn a_diverged_replica_is_recovered_alone() {
    for (seed, profile) in [(142_001, Profile::Geth), (142_002, Profile::Reth)] {
        let mut setup = FleetSetup::healthy(seed, &[Profile::OpGeth, profile, Profile::Geth]);
        setup.replicas[1].rival = Some(40);
        let out = run_fleet(&setup);
        passed("diverged", &out);
        assert_eq!(out.converged, [true, true, true], "{out:?}");
    }
}

fn lockstep(seed: u64, labels: LabelMode) -> FleetSetup {
    let mut setup = FleetSetup::healthy(seed, &THREE);
    setup.labels = labels;
    setup.watch_lockstep = true;
    // The slow replica stays ready (it counts) however far behind it falls.
    setup.ready_max_lag = 100_000;
    setup.replicas[2].payload_ms = 30;
    setup
}

/// Lockstep: safe and finalized move on a replica only once every live replica holds the
/// block. The same fleet with independent labels breaks the rule (the watch can fail).
#[test]
fn lockstep_holds_labels_until_the_slow_replica_has_the_block() {
    for seed in [143_001, 143_002] {
        let out = run_fleet(&lockstep(seed, LabelMode::Lockstep));
        passed("lockstep", &out);
        assert!(out.lockstep_checks >= 5, "{out:?}");
        assert_eq!(out.converged, [true, true, true], "{out:?}");
        let free = run_fleet(&lockstep(seed, LabelMode::Independent));
        assert!(
            free.violations.iter().any(|v| v.starts_with("lockstep:")),
            "independent labels run ahead of the slow replica: {free:?}"
        );
    }
}

/// Reorgs at the tip while three replicas follow together: a block the shared fetch handed on
/// can be off the new branch; the replica that finds it drops the shared blocks from there, and
/// every replica ends on the new branch (each EL's checker holds I1-I5 throughout).
#[test]
fn reorgs_at_the_tip_under_a_shared_fetch() {
    for (seed, raw) in [(145_001, true), (145_002, false), (145_003, true)] {
        let mut setup = FleetSetup { raw, ..FleetSetup::healthy(seed, &THREE) };
        setup.initial_len = 20;
        setup.reorgs = vec![(2_000, 3), (4_000, 1), (6_500, 5)];
        let out = run_fleet(&setup);
        passed("reorgs", &out);
        assert_eq!(out.converged, [true, true, true], "{out:?}");
    }
}

/// Lockstep with a replica that never comes back: it stops counting once it is not ready (its EL
/// does not answer), so the others' labels move on to the sources' labels.
#[test]
fn lockstep_does_not_wait_for_a_replica_that_never_comes_back() {
    for seed in [144_001, 144_002] {
        let mut setup = lockstep(seed, LabelMode::Lockstep);
        setup.replicas[2].dies_at = Some(4_000);
        let out = run_fleet(&setup);
        passed("lockstep, one dead", &out);
        assert_eq!(out.converged, [true, true, false], "{out:?}");
    }
}

/// Seeded random fleets: profiles, speeds, deaths, outages, a diverged replica, raw or JSON,
/// lockstep or not; every replica safe, every live one converged. Replay one with
/// `LIGHTCL_SIM_SEED=<seed>`.
#[test]
fn random_fleets() {
    super::logs();
    let seeds: Vec<u64> = match std::env::var("LIGHTCL_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("seed")],
        Err(_) => (150_000..150_100).collect(),
    };
    for seed in seeds {
        let setup = random(seed);
        let out = run_fleet(&setup);
        assert!(
            out.violations.is_empty(),
            "seed {seed} (replay: LIGHTCL_SIM_SEED={seed} cargo test --test it sim::fleet::random_fleets): {setup:?}\n{:#?}",
            out.violations
        );
    }
}

fn random(seed: u64) -> FleetSetup {
    let mut rng = lightcl_testbed::sim::Rng::new(seed);
    let n = rng.range(2, 4) as usize;
    let profiles: Vec<Profile> = (0..n).map(|_| rng.pick(&THREE)).collect();
    let mut setup = FleetSetup::healthy(seed, &profiles);
    setup.raw = rng.chance(0.5);
    setup.sources = rng.range(1, 3) as usize;
    setup.initial_len = rng.range(20, 400);
    setup.prefetch = rng.pick(&[8, 32, 64, 256]);
    let in_lockstep = rng.chance(0.5);
    setup.labels = if in_lockstep { LabelMode::Lockstep } else { LabelMode::Independent };
    setup.ready_max_lag = if in_lockstep { 100_000 } else { 4 };
    // Reorgs at the tip: blocks the shared fetch handed on may be off the new branch.
    let mut at = 0;
    for _ in 0..rng.range(0, 3) {
        at += rng.range(500, 4_000);
        setup.reorgs.push((at, rng.range(1, 6)));
    }
    // One live replica always: the others may be slow, die, go down or start diverged.
    for r in setup.replicas.iter_mut().skip(1) {
        *r = ReplicaSetup {
            payload_ms: if rng.chance(0.3) { rng.range(5, 40) } else { 0 },
            dies_at: rng.chance(0.2).then(|| rng.range(0, 8_000)),
            outage: rng.chance(0.2).then(|| (rng.range(0, 6_000), rng.range(500, 4_000))),
            rival: rng.chance(0.2).then(|| rng.range(1, 30)),
            ..*r
        };
    }
    // The watch holds every live replica to the rule; lightcl holds only the ready ones to it.
    // The two agree unless a replica leaves readiness while alive (reorgs, a rival branch, an
    // outage it comes back from): there the watch would flag what the rule allows.
    let quiet = setup.reorgs.is_empty()
        && setup.replicas.iter().all(|r| r.rival.is_none() && r.outage.is_none());
    setup.watch_lockstep = in_lockstep && quiet;
    setup
}
