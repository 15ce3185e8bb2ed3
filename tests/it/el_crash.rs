//! The EL SIGKILLed at several points of a long catch-up and of a divergence recovery, and
//! restarted on its own datadir (issue 10): whatever it comes back with (genesis, an older
//! block, or an older state under blocks it keeps, as op-geth does), lightcl must converge by
//! itself, or halt its writes with a message naming the runbook section, after which the
//! runbook's steps (restart the EL, then lightcl) must bring it to the sources' chain.
//!
//! geth and op-geth (path state scheme) that lose their unflushed state in a crash come back
//! at a block whose state they have, often genesis, with the blocks above kept; where their
//! snap-sync marker is above the head they switch to snap sync for the life of the process and
//! ignore every payload ("Ignoring payload while snap syncing"), which only a restart undoes.

use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::Proxy;
use lightcl_testbed::{ElClient, ElNode, Producer};

use crate::follow::{label_hashes_now, lightcl_bin, restart_if_died, source_chain, tail};
use crate::recovery::diverged;

const RUNBOOK: &str = "EL stuck below the blocks it accepted";

/// lightcl and the EL it drives; whenever lightcl halts, the test does what the runbook
/// section says (stop lightcl, restart the EL, start lightcl) and counts it.
struct Run<'a> {
    el: &'a mut ElNode,
    lc: &'a mut Lightcl,
    /// Where lightcl's log starts for its current run.
    from: usize,
    /// How often the runbook was followed.
    runbook: u32,
    /// How the EL ended each time it died by itself (not killed by the test).
    deaths: Vec<String>,
    /// When lightcl was started again (the runbook), each time.
    restarts: Vec<std::time::Instant>,
}

impl<'a> Run<'a> {
    fn new(el: &'a mut ElNode, lc: &'a mut Lightcl) -> Self {
        Self { el, lc, from: 0, runbook: 0, deaths: Vec::new(), restarts: Vec::new() }
    }

    /// Restarts or resyncs the EL if it died by itself ([`restart_if_died`]).
    async fn restart_if_died(&mut self) {
        restart_if_died(self.el, &mut self.deaths).await;
    }

    /// The log of lightcl's current run.
    fn log(&self) -> String {
        self.lc.log().split_off(self.from)
    }

    /// Fails the test, keeping lightcl's whole log in the EL's folder (kept on a panic).
    fn fail(&self, what: &str) -> ! {
        let kept = self.el.log_path().with_file_name("lightcl.log");
        let _ = std::fs::write(&kept, self.lc.log());
        panic!("{what} (lightcl's log: {}):\n{}", kept.display(), tail(&self.log(), 30));
    }

    /// Follows the runbook if lightcl halted; a halt must name the runbook section, and the
    /// runbook may be needed at most once per crash the test caused.
    async fn runbook_if_halted(&mut self, crashes: u32) {
        let log = self.log();
        if !log.contains("HALTED") {
            return;
        }
        assert!(log.contains(RUNBOOK), "halted without the runbook section:\n{}", tail(&log, 30));
        eprintln!("lightcl halted:\n{}", tail(&log, 8));
        self.runbook += 1;
        assert!(
            self.runbook <= crashes,
            "halted again after following the runbook; EL log:\n{}",
            self.el.log_tail(30)
        );
        self.lc.stop().await;
        self.el.restart().await.expect("restart the EL as the runbook says");
        self.from = self.lc.log().len();
        self.restarts.push(std::time::Instant::now());
        self.lc.restart().expect("start lightcl again");
    }

    /// Waits until the EL's head reaches `at` (lightcl is feeding it).
    async fn wait_head(&mut self, at: u64, crashes: u32) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let n = self.el.head().await.map(|b| b.number).unwrap_or(0);
            if n >= at {
                return;
            }
            self.restart_if_died().await;
            self.runbook_if_halted(crashes + self.deaths.len() as u32).await;
            if Instant::now() > deadline {
                self.fail(&format!("EL at #{n}, not {at}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the EL holds `want` as latest, safe and finalized.
    async fn converge(&mut self, want: (B256, B256, B256), crashes: u32) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            self.restart_if_died().await;
            let got = label_hashes_now(self.el).await;
            if got == Some((want.0, Some(want.1), Some(want.2))) {
                return;
            }
            self.runbook_if_halted(crashes + self.deaths.len() as u32).await;
            let n = self.el.head().await.map(|b| b.number).unwrap_or(0);
            if Instant::now() > deadline {
                self.fail(&format!("stuck at #{n}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn h(p: &Producer, n: u64) -> B256 {
    p.hash_at(n).expect("hash")
}

/// The catch-up the kill tests interrupt: long enough for three kills well apart (early, in the
/// middle, late) with a prefetch window (64) of blocks still to come after the last.
const CATCH_UP: u64 = 240;

/// Kills the EL at `points` of a [`CATCH_UP`]-block catch-up, restarting it each time; lightcl
/// must converge, by itself or after the runbook.
pub async fn killed_mid_catch_up(follower: ElClient, points: &[u64]) {
    let (src, p) = source_chain(follower.chain(), CATCH_UP, CATCH_UP, CATCH_UP - 50).await;
    let mut el = src.sibling_as(follower, "follower").await.expect("spawn follower EL");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    proxy.set_delay(Duration::from_millis(3));
    let cfg = FollowerConfig {
        sources: vec![proxy.url().to_string()],
        extra: "prefetch = 64\nfetch_concurrency = 2".into(),
        ..FollowerConfig::new(&src, &el)
    };
    proxy.record();
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start lightcl");
    let mut run = Run::new(&mut el, &mut lc);
    let mut back = Vec::new();
    for (crashes, &at) in (1..).zip(points) {
        run.wait_head(at, crashes - 1).await;
        let before = run.el.head().await.map(|b| b.number).unwrap_or(0);
        assert!(
            before < CATCH_UP,
            "the EL reached the tip before the kill at {at}; the test proves nothing"
        );
        run.el.kill();
        run.el.start().await.expect("restart the EL on its datadir");
        let n = run.el.head().await.map(|b| b.number).unwrap_or(0);
        assert!(
            n < CATCH_UP,
            "the EL reached the tip before the kill at {at}; the test proves nothing"
        );
        back.push(n);
    }
    let crashes = u32::try_from(points.len()).expect("few");
    run.converge((h(&p, CATCH_UP), h(&p, CATCH_UP), h(&p, CATCH_UP - 50)), crashes).await;
    eprintln!(
        "{follower}: killed at {points:?}, came back at {back:?}, converged; runbook followed {} \
         times; died by itself {:?}",
        run.runbook, run.deaths
    );
    // Feeding the EL again after each kill (and repairing it where it came back stuck) takes
    // the blocks from memory: within one run of lightcl no block is fetched twice.
    let recorded = proxy.recorded();
    crate::bootstrap::source_cost(&recorded, CATCH_UP);
    let mut runs: Vec<Vec<lightcl_testbed::proxy::Exchange>> =
        vec![Vec::new(); run.restarts.len() + 1];
    for e in recorded {
        runs[run.restarts.iter().filter(|&&at| at <= e.sent).count()].push(e);
    }
    let repairs = run.lc.log().matches("EL rolled back to its own head").count();
    for (k, r) in runs.iter().enumerate() {
        let twice = crate::bootstrap::fetched_twice(r);
        assert!(
            twice.is_empty(),
            "run {k} of lightcl fetched blocks twice: {twice:?} ({repairs} roll-backs)"
        );
    }
}

#[tokio::test]
async fn op_geth_killed_at_three_points_of_a_catch_up_converges() {
    killed_mid_catch_up(ElClient::OpGeth, &[40, 110, 180]).await;
}

#[tokio::test]
async fn geth_killed_at_two_points_of_a_catch_up_converges() {
    // geth comes back at genesis after every kill and needs the runbook each time: two kills
    // show that as well as three, at half the time (the longest test of the suite before).
    killed_mid_catch_up(ElClient::Geth, &[40, 120]).await;
}

/// Kills the EL right after lightcl reset it to the common ancestor, while it replays the
/// sources' branch; lightcl must converge, by itself or after the runbook.
pub async fn killed_mid_recovery(follower: ElClient) {
    let mut d = diverged(follower, 30, 150, 20).await;
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
    let mut run = Run::new(&mut d.local, &mut lc);
    run.converge(want, 1).await;
    eprintln!("{follower}: killed mid-recovery, converged; runbook followed {} times", run.runbook);
}

#[tokio::test]
async fn op_geth_killed_mid_recovery_converges() {
    killed_mid_recovery(ElClient::OpGeth).await;
}

#[tokio::test]
async fn geth_killed_mid_recovery_converges() {
    killed_mid_recovery(ElClient::Geth).await;
}
