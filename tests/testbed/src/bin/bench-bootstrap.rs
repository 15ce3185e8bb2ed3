//! Bootstrap benchmark: the same chain of N blocks with transactions brought into a fresh EL
//! twice in one run, once by EL sync (lightcl hands the EL the agreed head, the EL syncs from
//! its peer, lightcl checks and takes over) and once by replay (lightcl feeds every block).
//! Prints both times and the ratio replay/EL sync.
//!
//! Usage: bench-bootstrap --lightcl PATH [--blocks N] [--el geth|op-geth|reth|op-reth|op-reth-2]
//!        [--syncmode full|snap]

use std::path::Path;
use std::time::{Duration, Instant};

use lightcl_testbed::bench::Args;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::{ElClient, ElNode, NodeOptions, Producer, TxMix};

#[tokio::main]
async fn main() {
    lightcl_testbed::bench::finish("bench-bootstrap", bench().await);
}

async fn bench() -> Result<(), String> {
    let args = Args::parse(&["--blocks", "--el", "--syncmode"])?;
    let lightcl = args.lightcl.clone();
    let blocks = args.get("--blocks", 5_000u64)?;
    let client = args.el()?.unwrap_or(ElClient::Geth);
    let syncmode = args.text("--syncmode").unwrap_or("full").to_string();
    let e = |e: lightcl_testbed::Error| e.to_string();

    let src = ElNode::spawn_client(client, "bench-source").await.map_err(e)?;
    let mut p = Producer::new(&src).await.map_err(e)?;
    let t = Instant::now();
    p.build_many(blocks, TxMix::new(1, 1)).await.map_err(e)?;
    p.set_labels(blocks, blocks).await.map_err(e)?;
    let txs: usize = p.blocks(1, blocks).iter().map(|b| b.tx_count).sum();
    println!(
        "source: {blocks} {client} blocks, {txs} transactions, built in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let args: Vec<String> = if client.is_reth() || syncmode == "full" {
        Vec::new()
    } else {
        vec!["--syncmode".into(), syncmode.clone()]
    };
    let fresh = |name: &str| NodeOptions {
        genesis: src.genesis().clone(),
        extra_args: args.clone(),
        ..NodeOptions::of(client, name)
    };
    let tip = p.hash_at(blocks).ok_or("no tip")?;

    let el = ElNode::spawn_with(fresh("bench-el-sync")).await.map_err(e)?;
    el.add_peer(&src).await.map_err(e)?;
    let (by_sync, log) = time_to(&lightcl, &src, &el, "auto", tip).await?;
    if !log.contains("synced from its peers to the handed head") {
        return Err(format!("the EL-sync run did not hand over by EL sync; log:\n{log}"));
    }
    drop(el);

    let el = ElNode::spawn_with(fresh("bench-replay")).await.map_err(e)?;
    let (by_replay, _) = time_to(&lightcl, &src, &el, "replay", tip).await?;

    let rate = |d: Duration| blocks as f64 / d.as_secs_f64();
    let mode = if client.is_reth() { "default" } else { &syncmode };
    println!(
        "EL sync ({client}, {mode}):   {:>8.2}s  {:>8.1} blocks/s",
        by_sync.as_secs_f64(),
        rate(by_sync)
    );
    println!(
        "replay through lightcl:       {:>8.2}s  {:>8.1} blocks/s",
        by_replay.as_secs_f64(),
        rate(by_replay)
    );
    println!(
        "ratio (replay time / EL sync time): {:.2}",
        by_replay.as_secs_f64() / by_sync.as_secs_f64()
    );
    Ok(())
}

/// Starts lightcl with `bootstrap = mode` into `el` and waits until its head is `tip`.
async fn time_to(
    lightcl: &Path,
    src: &ElNode,
    el: &ElNode,
    mode: &str,
    tip: alloy_primitives::B256,
) -> Result<(Duration, String), String> {
    let mut cfg = FollowerConfig::new(src, el);
    cfg.poll_interval_ms = 100;
    cfg.extra = format!("bootstrap = \"{mode}\"\nbootstrap_min_gap_blocks = 100");
    let toml = cfg.to_toml().replace("level = \"info,lightcl=debug\"", "level = \"info\"");
    let t = Instant::now();
    let lc = Lightcl::start_with_args(lightcl, &toml, &["run"]).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if el.head().await.map_err(|e| e.to_string())?.hash == tip {
            let took = t.elapsed();
            // The hand-over is logged at lightcl's next round.
            lc.wait_log("following by replay from here", Duration::from_secs(10)).await;
            if let Some(cost) = lc.source_cost().await {
                println!("  {mode}: {cost}");
            }
            return Ok((took, lc.log()));
        }
        if Instant::now() > deadline {
            return Err(format!("{mode}: no tip within an hour; log:\n{}", lc.log()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
