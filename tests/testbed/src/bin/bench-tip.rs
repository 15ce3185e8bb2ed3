//! Tip latency benchmark: how long after a block becomes the source's head the local EL's
//! forkchoice answers VALID for it (or a descendant), minus the EL's own newPayload time for it,
//! so that what remains is lightcl's share: noticing the block, reading the labels, fetching and
//! verifying it, and the two Engine API round trips. Measured, one after the other on the same
//! source chain, for a WebSocket source (new-head subscription), an HTTP source polled on the
//! fixed clock (`poll_aligned = false`) and one polled just after each block is due (the
//! default), on each block time asked for. Blocks are made as a sequencer makes them: at the
//! wall-clock times their timestamps name. The HTTP sources go through a counting proxy, so each
//! run also prints the calls lightcl made per block; the Engine API goes through a recording
//! proxy in this process, so the producer's clock and the proxy's are the same.
//!
//! Usage: bench-tip --lightcl PATH [--blocks N] [--block-ms MS[,MS...]] [--el op-geth|geth]
//!        [--modes websocket,fixed,aligned]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_testbed::bench::Args;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::node::{cpu_seconds, memory_mib};
use lightcl_testbed::proxy::{Exchange, Proxy, source_requests};
use lightcl_testbed::{ElClient, ElNode, NodeOptions, Producer, TxMix};
use serde_json::Value;

/// Blocks at the start of a run left out of the figures (connections warming up, the block
/// time being learned).
const WARMUP: usize = 10;

#[tokio::main]
async fn main() {
    lightcl_testbed::bench::finish("bench-tip", bench().await);
}

/// How a run reaches the source.
#[derive(Clone, Copy)]
enum Mode {
    WebSocket,
    Fixed,
    Aligned,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Fixed => "http, fixed 1 s",
            Self::Aligned => "http, aligned",
        }
    }
}

async fn bench() -> Result<(), String> {
    let args = Args::parse(&["--blocks", "--block-ms", "--el", "--modes"])?;
    let modes: Vec<Mode> = args
        .text("--modes")
        .unwrap_or("websocket,fixed,aligned")
        .split(',')
        .map(|m| match m.trim() {
            "websocket" => Ok(Mode::WebSocket),
            "fixed" => Ok(Mode::Fixed),
            "aligned" => Ok(Mode::Aligned),
            other => Err(format!("--modes: unknown mode {other} (websocket, fixed, aligned)")),
        })
        .collect::<Result<_, _>>()?;
    let lightcl = args.lightcl.clone();
    let blocks = args.get("--blocks", 100usize)?;
    let block_times: Vec<u64> = args
        .text("--block-ms")
        .unwrap_or("2000,1000")
        .split(',')
        .map(|v| v.trim().parse::<u64>().map_err(|e| format!("--block-ms: {e}")))
        .collect::<Result<_, _>>()?;
    let client = args.el()?.unwrap_or(ElClient::OpGeth);
    let e = |e: lightcl_testbed::Error| e.to_string();
    let src = ElNode::spawn_with(NodeOptions::of(client, "tip-source")).await.map_err(e)?;
    let mut p = Producer::new(&src).await.map_err(e)?.with_realtime(true);
    p.build_many(5, TxMix::new(2, 1)).await.map_err(e)?;
    let mut k = 0;
    for &block_ms in &block_times {
        println!(
            "source: {client}, a block every {block_ms} ms with transactions at the times their \
             timestamps name, {blocks} blocks per run"
        );
        for &mode in &modes {
            k += 1;
            let el = src.sibling(&format!("tip-follower-{k}")).await.map_err(e)?;
            let r = run(&lightcl, &src, &mut p, &el, mode, blocks, block_ms).await?;
            let mut lat = r.latencies_ms.clone();
            lat.sort_by(f64::total_cmp);
            let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
            let mut np = r.new_payload_ms.clone();
            np.sort_by(f64::total_cmp);
            let calls = r.calls_per_block.map_or("-".to_string(), |c| format!("{c:.2}"));
            println!(
                "  {:<16} blocks {:>4}  lightcl's share p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} \
                 ms | source calls per block {calls:>5} | EL newPayload p50 {:.1} ms | lightcl \
                 CPU {:.1}% of a core, RSS {:.1} MiB",
                mode.name(),
                lat.len(),
                pct(0.5),
                pct(0.99),
                lat.last().copied().unwrap_or(0.0),
                np.get(np.len() / 2).copied().unwrap_or(0.0),
                r.cpu_share * 100.0,
                r.rss_mib
            );
        }
    }
    Ok(())
}

/// What one run measured.
struct Run {
    latencies_ms: Vec<f64>,
    /// Source calls (each call of a batch counted) per block made, for an HTTP source.
    calls_per_block: Option<f64>,
    new_payload_ms: Vec<f64>,
    cpu_share: f64,
    rss_mib: f64,
}

async fn run(
    lightcl: &Path,
    src: &ElNode,
    p: &mut Producer,
    el: &ElNode,
    mode: Mode,
    blocks: usize,
    block_ms: u64,
) -> Result<Run, String> {
    let e = |e: lightcl_testbed::Error| e.to_string();
    let proxy = Proxy::start(vec![el.auth_url()]).await.map_err(e)?;
    let source_proxy = Proxy::start(vec![src.http_url()]).await.map_err(e)?;
    let mut cfg = FollowerConfig::new(src, el);
    cfg.sources = vec![match mode {
        Mode::WebSocket => src.ws_url(),
        Mode::Fixed | Mode::Aligned => source_proxy.url().to_string(),
    }];
    cfg.engine_url = proxy.url().to_string();
    cfg.follow = "latest";
    cfg.poll_interval_ms = lightcl::config::DEFAULT_POLL_INTERVAL_MS;
    if matches!(mode, Mode::Fixed) {
        cfg.extra.push_str("\npoll_aligned = false");
    }
    let level = std::env::var("BENCH_TIP_LOG").unwrap_or_else(|_| "info".into());
    let toml =
        cfg.to_toml().replace("level = \"info,lightcl=debug\"", &format!("level = \"{level}\""));
    let lc = Lightcl::start_with_args(lightcl, &toml, &["run"]).map_err(e)?;
    // Caught up with what exists before measuring.
    wait_head(el, p.head().hash, Duration::from_secs(120)).await?;
    let cpu0 = lc.pid().and_then(cpu_seconds).unwrap_or(0.0);
    let started = Instant::now();
    let mut made: Vec<(u64, B256, Instant)> = Vec::with_capacity(blocks);
    for k in 0..blocks {
        // Each block at the wall-clock time its timestamp names (a multiple of the block time),
        // as a sequencer makes them.
        // (Never before the time the block's timestamp names: earlier blocks made in a burst
        // may have run ahead of the clock.)
        let now_ms = lightcl::source::pace::unix_ms();
        let next = ((now_ms / block_ms + 1) * block_ms)
            .max((p.head().timestamp + block_ms.div_ceil(1000)) * 1000);
        tokio::time::sleep(Duration::from_millis(next - now_ms + 2)).await;
        if k == WARMUP {
            proxy.record();
            source_proxy.record();
        }
        let b = p.build(TxMix::new(2, 1)).await.map_err(e)?;
        made.push((b.number, b.hash, Instant::now()));
    }
    wait_head(el, p.head().hash, Duration::from_secs(30)).await?;
    let cpu_share =
        (lc.pid().and_then(cpu_seconds).unwrap_or(0.0) - cpu0) / started.elapsed().as_secs_f64();
    let rss_mib = lc.pid().and_then(|p| memory_mib(p, "VmRSS")).unwrap_or(0.0);
    if let Ok(path) = std::env::var("BENCH_TIP_KEEP_LOG") {
        let _ =
            std::fs::write(format!("{path}-{}.log", mode.name().replace([' ', ','], "")), lc.log());
    }
    drop(lc);
    let numbers: HashMap<B256, u64> = made.iter().map(|(n, h, _)| (*h, *n)).collect();
    let calls_per_block = (!matches!(mode, Mode::WebSocket)).then(|| {
        let (b, other) = source_requests(&source_proxy.recorded());
        (b + other) as f64 / (blocks - WARMUP).max(1) as f64
    });
    Ok(Run { cpu_share, rss_mib, calls_per_block, ..figures(&proxy.recorded(), &made, &numbers) })
}

async fn wait_head(el: &ElNode, want: B256, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while el.head().await.map_err(|e| e.to_string())?.hash != want {
        if Instant::now() > deadline {
            return Err(format!("the follower did not reach {want} in {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn status_of(x: &Exchange) -> Option<&str> {
    let r = &x.response["result"];
    r["status"].as_str().or_else(|| r["payloadStatus"]["status"].as_str())
}

fn figures(log: &[Exchange], made: &[(u64, B256, Instant)], numbers: &HashMap<B256, u64>) -> Run {
    let hash_of = |v: &Value| v.as_str().and_then(|s| s.parse::<B256>().ok());
    // The EL's own time per block (its first VALID newPayload), and each VALID forkchoice's
    // head height and answer time.
    let mut own: HashMap<B256, Duration> = HashMap::new();
    let mut heads: Vec<(u64, Instant)> = Vec::new();
    for x in log {
        let method = x.request["method"].as_str().unwrap_or("");
        let params = &x.request["params"][0];
        if status_of(x) != Some("VALID") {
            continue;
        }
        if method.starts_with("engine_newPayload") {
            if let Some(h) = hash_of(&params["blockHash"]) {
                own.entry(h).or_insert(x.answered - x.sent);
            }
        } else if method.starts_with("engine_forkchoiceUpdated")
            && let Some(n) = hash_of(&params["headBlockHash"]).and_then(|h| numbers.get(&h))
        {
            heads.push((*n, x.answered));
        }
    }
    let mut latencies_ms = Vec::new();
    let mut new_payload_ms = Vec::new();
    for (number, hash, at) in made.iter().skip(WARMUP) {
        let reached = heads.iter().filter(|(n, t)| n >= number && t >= at).map(|(_, t)| *t).min();
        let (Some(reached), Some(np)) = (reached, own.get(hash)) else { continue };
        let total = reached - *at;
        latencies_ms.push(total.saturating_sub(*np).as_secs_f64() * 1000.0);
        new_payload_ms.push(np.as_secs_f64() * 1000.0);
    }
    Run { latencies_ms, new_payload_ms, calls_per_block: None, cpu_share: 0.0, rss_mib: 0.0 }
}
