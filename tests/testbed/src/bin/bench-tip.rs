//! Tip latency benchmark: how long after a block becomes the source's head the local EL's
//! forkchoice answers VALID for it (or a descendant), minus the EL's own newPayload time for it,
//! so that what remains is lightcl's share: noticing the block, reading the labels, fetching and
//! verifying it, and the two Engine API round trips. Measured for a WebSocket source (new-head
//! subscription) and for an HTTP source polled at the default interval, one after the other on the
//! same source chain. The Engine API goes through a recording proxy in this process, so the
//! producer's clock and the proxy's are the same.
//!
//! Usage: bench-tip --lightcl PATH [--blocks N] [--block-ms MS] [--el op-geth|geth]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_testbed::bench::Args;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::node::{cpu_seconds, memory_mib};
use lightcl_testbed::proxy::{Exchange, Proxy};
use lightcl_testbed::{ElClient, ElNode, NodeOptions, Producer, TxMix};
use serde_json::Value;

/// Blocks at the start of a run left out of the figures (connections warming up).
const WARMUP: usize = 10;

#[tokio::main]
async fn main() {
    lightcl_testbed::bench::finish("bench-tip", bench().await);
}

async fn bench() -> Result<(), String> {
    let args = Args::parse(&["--blocks", "--block-ms", "--el"])?;
    let lightcl = args.lightcl.clone();
    let blocks = args.get("--blocks", 300usize)?;
    let block_ms = args.get("--block-ms", 1000u64)?;
    let client = args.el()?.unwrap_or(ElClient::OpGeth);
    let e = |e: lightcl_testbed::Error| e.to_string();
    let src = ElNode::spawn_with(NodeOptions::of(client, "tip-source")).await.map_err(e)?;
    let mut p = Producer::new(&src).await.map_err(e)?;
    p.build_many(5, TxMix::new(2, 1)).await.map_err(e)?;
    println!(
        "source: {client}, a block every {block_ms} ms with transactions, {blocks} blocks per run"
    );
    for (name, url) in [("websocket", src.ws_url()), ("http, polled", src.http_url())] {
        let el = src.sibling(&format!("tip-follower-{}", name.len())).await.map_err(e)?;
        let r = run(&lightcl, &src, &mut p, &el, &url, blocks, block_ms).await?;
        let mut lat = r.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
        let mut np = r.new_payload_ms.clone();
        np.sort_by(f64::total_cmp);
        println!(
            "{name:<13} blocks {:>4}  lightcl's share p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms \
             | EL newPayload p50 {:.1} ms | lightcl CPU {:.1}% of a core, RSS {:.1} MiB",
            lat.len(),
            pct(0.5),
            pct(0.99),
            lat.last().copied().unwrap_or(0.0),
            np.get(np.len() / 2).copied().unwrap_or(0.0),
            r.cpu_share * 100.0,
            r.rss_mib
        );
    }
    Ok(())
}

/// What one run measured.
struct Run {
    latencies_ms: Vec<f64>,
    new_payload_ms: Vec<f64>,
    cpu_share: f64,
    rss_mib: f64,
}

async fn run(
    lightcl: &Path,
    src: &ElNode,
    p: &mut Producer,
    el: &ElNode,
    source_url: &str,
    blocks: usize,
    block_ms: u64,
) -> Result<Run, String> {
    let e = |e: lightcl_testbed::Error| e.to_string();
    let proxy = Proxy::start(vec![el.auth_url()]).await.map_err(e)?;
    let mut cfg = FollowerConfig::new(src, el);
    cfg.sources = vec![source_url.to_string()];
    cfg.engine_url = proxy.url().to_string();
    cfg.follow = "latest";
    cfg.poll_interval_ms = lightcl::config::DEFAULT_POLL_INTERVAL_MS;
    let toml = cfg.to_toml().replace("level = \"info,lightcl=debug\"", "level = \"info\"");
    let lc = Lightcl::start_with_args(lightcl, &toml, &["run"]).map_err(e)?;
    // Caught up with what exists before measuring.
    wait_head(el, p.head().hash, Duration::from_secs(120)).await?;
    proxy.record();
    let cpu0 = lc.pid().and_then(cpu_seconds).unwrap_or(0.0);
    let started = Instant::now();
    let mut made: Vec<(u64, B256, Instant)> = Vec::with_capacity(blocks);
    let mut next = Instant::now();
    for _ in 0..blocks {
        tokio::time::sleep_until(next.into()).await;
        next += Duration::from_millis(block_ms);
        let b = p.build(TxMix::new(2, 1)).await.map_err(e)?;
        made.push((b.number, b.hash, Instant::now()));
    }
    wait_head(el, p.head().hash, Duration::from_secs(30)).await?;
    let cpu_share =
        (lc.pid().and_then(cpu_seconds).unwrap_or(0.0) - cpu0) / started.elapsed().as_secs_f64();
    let rss_mib = lc.pid().and_then(|p| memory_mib(p, "VmRSS")).unwrap_or(0.0);
    drop(lc);
    let numbers: HashMap<B256, u64> = made.iter().map(|(n, h, _)| (*h, *n)).collect();
    Ok(Run { cpu_share, rss_mib, ..figures(&proxy.recorded(), &made, &numbers) })
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
    Run { latencies_ms, new_payload_ms, cpu_share: 0.0, rss_mib: 0.0 }
}
