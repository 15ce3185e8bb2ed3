//! Footprint benchmark: lightcl's memory and CPU with its default configuration (HTTP source
//! polled every second, `fetch = "auto"`). Three phases on one op-geth source:
//!
//! 1. catch-up: a fresh EL fills up N blocks with transactions; lightcl's peak RSS (`VmHWM`);
//! 2. following: the source makes a block every `--block-ms` for `--minutes`; lightcl's RSS
//!    sampled every 5 s (median and max) and its CPU time over the phase as a share of one core;
//! 3. idle in sync: no new blocks for `--idle-minutes`; CPU share again.
//!
//! Usage: bench-footprint --lightcl PATH [--blocks N] [--minutes M] [--block-ms MS]
//!        [--idle-minutes M] [--el op-geth|geth]

use std::time::{Duration, Instant};

use lightcl_testbed::bench::Args;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::node::{cpu_seconds, memory_mib};
use lightcl_testbed::{ElClient, ElNode, NodeOptions, Producer, TxMix};

#[tokio::main]
async fn main() {
    lightcl_testbed::bench::finish("bench-footprint", bench().await);
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn bench() -> Result<(), String> {
    let args = Args::parse(&["--blocks", "--minutes", "--block-ms", "--idle-minutes", "--el"])?;
    let lightcl = args.lightcl.clone();
    let blocks = args.get("--blocks", 2000u64)?;
    let minutes = args.get("--minutes", 10.0f64)?;
    let block_ms = args.get("--block-ms", 2000u64)?;
    let idle_minutes = args.get("--idle-minutes", 2.0f64)?;
    let client = args.el()?.unwrap_or(ElClient::OpGeth);
    let e = |e: lightcl_testbed::Error| e.to_string();
    let src = ElNode::spawn_with(NodeOptions::of(client, "footprint-source")).await.map_err(e)?;
    let mut p = Producer::new(&src).await.map_err(e)?;
    p.build_many(blocks, TxMix::new(4, 2)).await.map_err(e)?;
    p.set_labels(blocks, blocks).await.map_err(e)?;
    let el = src.sibling("footprint-follower").await.map_err(e)?;
    println!("source: {client}, {blocks} blocks with transactions; load {}", load());

    let mut cfg = FollowerConfig::new(&src, &el);
    cfg.poll_interval_ms = lightcl::config::DEFAULT_POLL_INTERVAL_MS;
    cfg.follow = "latest";
    let toml = cfg.to_toml().replace("level = \"info,lightcl=debug\"", "level = \"info\"");
    let lc = Lightcl::start_with_args(&lightcl, &toml, &["run"]).map_err(e)?;
    let pid = lc.pid().ok_or("lightcl has no pid")?;
    let t = Instant::now();
    let target = p.head().hash;
    let mut sampled_peak = 0.0f64;
    while el.head().await.map_err(e)?.hash != target {
        if t.elapsed() > Duration::from_secs(1800) {
            return Err("no catch-up in 30 min".into());
        }
        sampled_peak = sampled_peak.max(memory_mib(pid, "VmRSS").unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hwm = memory_mib(pid, "VmHWM").unwrap_or(0.0);
    println!(
        "catch-up: {blocks} blocks in {:.1}s; lightcl peak RSS {hwm:.1} MiB (VmHWM; sampled max \
         {sampled_peak:.1} MiB); CPU {:.1}s",
        t.elapsed().as_secs_f64(),
        cpu_seconds(pid).unwrap_or(0.0)
    );

    // Following: a block every block_ms.
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let t = Instant::now();
    let span = Duration::from_secs_f64(minutes * 60.0);
    let mut samples = Vec::new();
    let mut next_block = Instant::now();
    let mut next_sample = Instant::now() + Duration::from_secs(5);
    let mut made = 0u64;
    while t.elapsed() < span {
        let now = Instant::now();
        if block_ms > 0 && now >= next_block {
            p.build(TxMix::new(2, 1)).await.map_err(e)?;
            made += 1;
            next_block += Duration::from_millis(block_ms);
        }
        if now >= next_sample {
            samples.push(memory_mib(pid, "VmRSS").unwrap_or(0.0));
            next_sample += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let following_cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    samples.sort_by(f64::total_cmp);
    println!(
        "following: {made} blocks over {:.1} min; lightcl RSS median {:.1} MiB, max {:.1} MiB; \
         CPU {:.2}s = {:.2}% of one core; load {}",
        t.elapsed().as_secs_f64() / 60.0,
        samples.get(samples.len() / 2).copied().unwrap_or(0.0),
        samples.last().copied().unwrap_or(0.0),
        following_cpu,
        following_cpu / t.elapsed().as_secs_f64() * 100.0,
        load()
    );

    // Idle in sync: nothing new at the source.
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(idle_minutes * 60.0)).await;
    let idle_cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    println!(
        "idle in sync: {:.1} min; lightcl RSS {:.1} MiB; CPU {:.2}s = {:.2}% of one core; load {}",
        t.elapsed().as_secs_f64() / 60.0,
        memory_mib(pid, "VmRSS").unwrap_or(0.0),
        idle_cpu,
        idle_cpu / t.elapsed().as_secs_f64() * 100.0,
        load()
    );
    if let Some(cost) = lc.source_cost().await {
        println!("source cost over the whole run: {cost}");
    }
    drop(lc);
    Ok(())
}
