//! Faults an operator meets (issue 10), at the cheapest layer that shows each: a hanging source
//! must not set the pace of the quorum, and every fault is visible by name in the log and in
//! `/status`. Simulation where the behaviour is lightcl's logic; a real JSON-RPC client against
//! a local HTTP endpoint for failure reasons.

use lightcl::config::Follow;
use lightcl::source::quorum::{Quorum, QuorumName};
use lightcl_testbed::sim::history::{Outcome, Setup, run};
use lightcl_testbed::sim::source::Behaviour;

use crate::sim::Captured;

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

fn lines_with(log: &str, needles: &[&str]) -> usize {
    log.lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// A source whose safe and finalized are above its own latest: said by name in the log (at most
/// once per 30 s), counted as `lying_labels`, and shown in `/status` with what it said; the
/// majority follows without it.
#[test]
fn a_source_lying_about_its_labels_is_named() {
    let setup = Setup {
        sources: vec![Behaviour::Honest, Behaviour::Honest, Behaviour::LabelLies],
        quorum: Quorum::Named(QuorumName::Majority),
        duration_ms: 60_000,
        ..Setup::quiet(1011)
    };
    let (out, log) = logged("lightcl=info", || check("label lies", &setup));
    assert!(out.converged, "{out:?}");
    let s2 = source(&out, "s2");
    assert!(s2.errors.get("lying_labels").is_some_and(|n| *n > 0), "{s2:?}");
    let problem = s2.last_problem.as_deref().unwrap_or_default();
    assert!(problem.contains("out of order"), "/status says what it did: {problem}");
    let said =
        lines_with(&log, &["WARN", "source=\"s2\"", "lying_labels", "answers inconsistently"]);
    assert!(said >= 1, "no log line names the lying source:\n{log}");
    assert!(said <= 4, "{said} lines in 60 s: not rate limited:\n{log}");
}

/// One source flapping between two branches for 30 s (a load balancer over replicas on
/// different branches): the log and `/status` say so by name.
#[test]
fn a_flapping_source_is_named() {
    let setup = Setup {
        sources: vec![Behaviour::Flapping],
        initial_len: 20,
        follow: Follow::Latest,
        // The reorg makes the second branch the replicas flap between.
        events: vec![(1_000, lightcl_testbed::sim::history::Event::Reorg(6))],
        duration_ms: 30_000,
        ..Setup::quiet(1012)
    };
    let (out, log) = logged("lightcl=info", || check("flapping", &setup));
    let s0 = source(&out, "s0");
    eprintln!("{s0:?}");
    let problem = s0.last_problem.as_deref().unwrap_or_default();
    assert!(!problem.is_empty(), "/status names no problem: {s0:?}");
    assert!(
        lines_with(&log, &["WARN", "source=\"s0\"", "answers inconsistently"]) >= 1,
        "no log line names the flapping source:\n{log}"
    );
}

/// One lying and one flaky source among three: the disagreement is said at most once per
/// 30 s (not once per label and poll), and a flaky source's fail / answer-again pairs are said
/// at most once per 30 s each.
#[test]
fn a_liar_and_a_flaky_source_do_not_flood_the_log() {
    let setup = Setup {
        sources: vec![Behaviour::Honest, Behaviour::Honest, Behaviour::MixedLabels],
        quorum: Quorum::Named(QuorumName::Majority),
        error_rate: 0.2,
        duration_ms: 60_000,
        ..Setup::quiet(1013)
    };
    let (out, log) = logged("lightcl=info", || check("liar and flaky", &setup));
    assert!(out.converged, "{out:?}");
    let disagree = lines_with(&log, &["sources do not agree"]);
    assert!(disagree <= 4, "{disagree} disagreement lines in 60 s:\n{log}");
    for s in ["s0", "s1", "s2"] {
        let failing = lines_with(&log, &[&format!("source=\"{s}\""), "source failing"]);
        let again = lines_with(&log, &[&format!("source=\"{s}\""), "answering again"]);
        assert!(failing <= 6 && again <= failing, "{s}: {failing} failing, {again} again:\n{log}");
    }
    let errors: u64 = out.sources.iter().flat_map(|s| s.errors.values()).sum();
    assert!(errors > 20, "the sources did fail ({errors} errors): the test saw what it checks");
}

/// While the EL is down, `/status` says `el_down` (not `following`).
#[test]
fn status_says_when_the_el_is_down() {
    use lightcl::api::Mode;
    use lightcl_testbed::sim::history::Event;
    let setup = Setup { events: vec![(5_000, Event::ElDown(10_000))], ..Setup::quiet(1014) };
    let out = check("el down", &setup);
    assert!(out.modes.contains(&Mode::ElDown), "modes seen: {:?}", out.modes);
    assert!(out.converged, "{out:?}");
}

/// op-geth after a crash: state rewound below blocks it keeps, VALID to all of them, head does
/// not move. lightcl rolls it back to its own head and converges.
#[test]
fn el_stuck_below_blocks_it_accepted_is_repaired() {
    use lightcl_testbed::sim::el::Profile;
    use lightcl_testbed::sim::history::Event;
    for seed in 0..20 {
        let setup = Setup {
            profile: Profile::OpGeth,
            initial_len: 60,
            events: vec![(3_000, Event::ElCrashKeepingBlocks)],
            ..Setup::quiet(1100 + seed)
        };
        let out = check("stuck el", &setup);
        assert!(out.converged, "seed {}: {out:?}", setup.seed);
        // Converged by rolling the EL back, not by luck.
        assert!(out.record.set_heads > 0, "seed {}: {out:?}", setup.seed);
        // The blocks fed again after the roll-back came from memory, not from the source.
        assert_eq!(out.served_twice, 0, "seed {}: blocks fetched twice", setup.seed);
    }
}

/// The same without the debug API: lightcl halts its writes and names the runbook section.
#[test]
fn el_stuck_without_debug_api_halts_naming_the_runbook() {
    use lightcl_testbed::sim::el::Profile;
    use lightcl_testbed::sim::history::Event;
    let setup = Setup {
        profile: Profile::OpGeth,
        initial_len: 60,
        events: vec![(1_000, Event::NoDebugApi), (3_000, Event::ElCrashKeepingBlocks)],
        ..Setup::quiet(1200)
    };
    let out = run(&setup);
    assert!(out.halted, "{out:?}");
    assert_eq!(out.violations, vec!["halted without a finalized divergence".to_string()]);
    let why = out.halted_why.unwrap_or_default();
    assert!(why.contains("EL stuck below the blocks it accepted"), "{why}");
}

/// A history where the EL crashes into snap-sync mode: lightcl must halt and then write nothing
/// more (the checker forbids writes once it halted). Returns the outcome and why it halted.
fn halts_after_a_crash_into_snap_sync(
    seed: u64,
    profile: lightcl_testbed::sim::el::Profile,
) -> (Outcome, String) {
    use lightcl_testbed::sim::history::Event;
    let setup = Setup {
        profile,
        initial_len: 60,
        events: vec![(3_000, Event::ElCrashIntoSnapSync)],
        ..Setup::quiet(seed)
    };
    let out = run(&setup);
    assert!(out.halted, "seed {seed}: {out:?}");
    assert_eq!(
        out.violations,
        vec!["halted without a finalized divergence".to_string()],
        "seed {seed}"
    );
    let why = out.halted_why.clone().unwrap_or_default();
    (out, why)
}

/// An EL that comes back from a crash in snap-sync mode (ignoring every payload until it is
/// restarted) cannot be repaired through its APIs: lightcl rolls it back, sees it still stuck at
/// genesis, halts its writes and says to restart the EL, naming the runbook section.
#[test]
fn el_in_snap_sync_after_a_crash_halts_naming_the_runbook() {
    use lightcl_testbed::sim::el::Profile;
    for (seed, profile) in (1300..1306).zip([Profile::Geth, Profile::OpGeth].into_iter().cycle()) {
        let (_, why) = halts_after_a_crash_into_snap_sync(seed, profile);
        assert!(why.contains("EL stuck below the blocks it accepted"), "seed {seed}: {why}");
        assert!(why.contains("Restart the EL"), "seed {seed}: {why}");
    }
}

/// An EL stuck the same way but whose `debug_setHead` is refused or does nothing (the reth
/// profile: both forms occur): lightcl must not loop on roll-backs that never happen. It halts
/// at the first one, says why, and writes nothing more.
#[test]
fn stuck_el_without_a_working_set_head_halts_at_the_first_roll_back() {
    use lightcl_testbed::sim::el::Profile;
    let mut seen = (false, false);
    for seed in 1310..1320 {
        let (out, why) = halts_after_a_crash_into_snap_sync(seed, Profile::Reth);
        assert_eq!(out.record.set_heads, 0, "seed {seed}: no roll-back happened");
        assert!(why.contains("cannot be rolled back through debug_setHead"), "seed {seed}: {why}");
        assert!(why.contains("EL stuck below the blocks it accepted"), "seed {seed}: {why}");
        seen.0 |= why.contains("Invalid params");
        seen.1 |= why.contains("answered success");
    }
    assert_eq!(seen, (true, true), "both reth answers to debug_setHead were exercised");
}

/// Failure reasons a real JSON-RPC client reports: HTTP 500 is `http_5xx`, a closed port is
/// `refused`, a non-JSON answer is `malformed`.
#[tokio::test]
async fn failure_reasons_are_accurate() {
    use lightcl::config::SourceEntry;
    use lightcl::source::{RpcSource, Source};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve(answer: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        url
    }
    let reason = |url: String| async move {
        let s = RpcSource::new(&SourceEntry::Url(url), std::time::Duration::from_secs(2));
        s.chain_id().await.expect_err("must fail").reason()
    };
    let e500 = serve(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops",
    )
    .await;
    assert_eq!(reason(e500).await, "http_5xx");
    let bad = serve(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!",
    )
    .await;
    let got = reason(bad).await;
    assert!(got == "malformed", "non-JSON answer reported as {got}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        drop(l);
        format!("http://{a}")
    };
    assert_eq!(reason(closed).await, "refused");
}

/// A deep recovery whose replay window reaches above the branch the EL held: no forkchoice on
/// the way reorgs the EL onto a branch lower than the one it held (op-reth can die with SIGBUS
/// when its head moves below blocks it has written while blocks are read, docs/engines.md).
/// Where the sources' chain is shorter than the EL's branch the last forkchoice has to lower the
/// head: once, not every 64 blocks. (A divergence deeper than the prefetch window still lowers
/// it once per window: the window's replay must become canonical before the next.)
#[test]
fn replay_never_lowers_the_head_below_the_branch_the_el_held() {
    use lightcl_testbed::sim::el::Profile;
    use lightcl_testbed::sim::history::Prefill;
    for (seed, profile) in
        (1400..1406).zip([Profile::Reth, Profile::OpGeth, Profile::Geth].into_iter().cycle())
    {
        // The EL: honest up to 50, then 200 blocks of its own (tip 250); the sources: 300.
        let setup = Setup {
            profile,
            initial_len: 300,
            prefill: Prefill::Rival { keep: 50, extra: 200, finalized: Some(20) },
            // One replay window reaches past the EL's tip (lightcl's default).
            prefetch: 256,
            ..Setup::quiet(seed)
        };
        let out = check("replay_never_lowers_the_head", &setup);
        assert!(out.converged, "seed {seed} {profile:?}: {out:?}");
        assert_eq!(out.record.head_lowering_reorgs, 0, "seed {seed} {profile:?}");
    }
    // The sources' chain (120) is shorter than the EL's branch (250): one lowering, at the end.
    let setup = Setup {
        profile: Profile::Reth,
        initial_len: 120,
        prefill: Prefill::Rival { keep: 50, extra: 200, finalized: Some(20) },
        prefetch: 256,
        ..Setup::quiet(1410)
    };
    let out = check("replay_to_a_shorter_chain", &setup);
    assert!(out.converged, "{out:?}");
    assert_eq!(out.record.head_lowering_reorgs, 1, "{out:?}");
}
