//! Fleet benchmark: the same chain caught up through one lightcl by one fresh replica and by
//! three fresh replicas, side by side in one run, with a recording proxy in front of the source.
//! Prints, for each: the time until every replica holds the source's labels, blocks per second
//! per replica and in all, the ELs' CPU seconds, the blocks and other requests the source served
//! (per block), and lightcl's CPU seconds; then the ratios three/one. On a machine with fewer
//! cores than replicas the ELs' own execution, not lightcl, sets the pace: compare the blocks
//! imported per second in all.
//!
//! Usage: bench-fleet --lightcl PATH [--blocks N] [--el op-geth|op-reth|op-reth-2|geth|reth]

use std::time::{Duration, Instant};

use lightcl_testbed::bench::Args;
use lightcl_testbed::lightcl::{Lightcl, fleet_toml};
use lightcl_testbed::node::cpu_seconds;
use lightcl_testbed::proxy::{Proxy, source_requests};
use lightcl_testbed::{ElClient, ElNode, Producer, TxMix};

#[tokio::main]
async fn main() {
    lightcl_testbed::bench::finish("bench-fleet", bench().await);
}

/// One measured catch-up.
struct Run {
    replicas: usize,
    secs: f64,
    blocks: u64,
    other: u64,
    cpu: Option<f64>,
    el_cpu: f64,
}

async fn bench() -> Result<(), String> {
    let args = Args::parse(&["--blocks", "--el"])?;
    let blocks = args.get("--blocks", 1000u64)?;
    let follower = args.el()?.unwrap_or(ElClient::OpGeth);
    let e = |e: lightcl_testbed::Error| e.to_string();
    let src = ElNode::spawn(follower.chain(), "bench-fleet-source").await.map_err(e)?;
    let mut p = Producer::new(&src).await.map_err(e)?;
    p.build_many(blocks, TxMix::new(4, 2)).await.map_err(e)?;
    p.set_labels(blocks, blocks - 10).await.map_err(e)?;
    println!("source: {blocks} blocks with transactions; replicas: {follower}");
    let mut runs = Vec::new();
    for replicas in [1usize, 3] {
        runs.push(follow(&args, &src, &p, follower, replicas).await?);
    }
    for r in &runs {
        println!(
            "{} replica(s): {:.1} s, {:.0} blocks/s per replica, {:.0} imported per second in all \
             (EL CPU {:.1} s); source served {} blocks and {} other requests ({:.3} requests per \
             block); lightcl CPU {}",
            r.replicas,
            r.secs,
            blocks as f64 / r.secs,
            (blocks * r.replicas as u64) as f64 / r.secs,
            r.el_cpu,
            r.blocks,
            r.other,
            (r.blocks + r.other) as f64 / blocks as f64,
            r.cpu.map_or("?".into(), |c| format!("{c:.1} s"))
        );
    }
    let (one, three) = (&runs[0], &runs[1]);
    println!(
        "three/one: catch-up rate {:.2}, source blocks {:.2}, all source requests {:.2}",
        one.secs / three.secs,
        three.blocks as f64 / one.blocks as f64,
        (three.blocks + three.other) as f64 / (one.blocks + one.other) as f64
    );
    Ok(())
}

async fn follow(
    args: &Args,
    src: &ElNode,
    p: &Producer,
    client: ElClient,
    replicas: usize,
) -> Result<Run, String> {
    let e = |e: lightcl_testbed::Error| e.to_string();
    let proxy = Proxy::start(vec![src.http_url()]).await.map_err(e)?;
    proxy.record();
    let mut els = Vec::new();
    for i in 0..replicas {
        els.push(src.sibling_as(client, &format!("bench-fleet-{replicas}-{i}")).await.map_err(e)?);
    }
    let names: Vec<String> = (0..replicas).map(|i| format!("r{i}")).collect();
    let list: Vec<(&str, &ElNode)> = names.iter().map(String::as_str).zip(els.iter()).collect();
    let toml = fleet_toml(proxy.url(), &list, "", 4);
    let started = Instant::now();
    let mut lc = Lightcl::start_with_args(&args.lightcl, &toml, &["run"]).map_err(e)?;
    let (want_head, want_fin) = p.labels();
    let deadline = started + Duration::from_secs(1800);
    for el in &els {
        loop {
            let head = el.head().await.ok().map(|b| b.hash);
            let fin = el.block("finalized").await.ok().flatten().map(|b| b.hash);
            if head == Some(want_head) && fin == Some(want_fin) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not catch up; lightcl log: {}", el.name(), lc.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = lc.pid().and_then(cpu_seconds);
    let el_cpu = els.iter().filter_map(|el| el.pid().and_then(cpu_seconds)).sum();
    let _ = lc.stop().await;
    let (blocks, other) = source_requests(&proxy.recorded());
    Ok(Run { replicas, secs, blocks, other, cpu, el_cpu })
}
