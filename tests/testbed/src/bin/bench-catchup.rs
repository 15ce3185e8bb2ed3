//! Catch-up benchmark: a fresh EL catches up N blocks with transactions through lightcl, once
//! fetching raw blocks (`fetch = "raw"`) and once JSON blocks (`fetch = "json"`), against the
//! same payloads fed back-to-back from memory to another fresh EL (the EL's own import limit),
//! all in one run on one chain. Prints the times, the ratios limit/lightcl (1.0: lightcl adds
//! nothing), the CPU seconds of lightcl and of the source EL per 1 000 blocks, and lightcl's
//! peak RSS.
//!
//! The source is geth or op-geth; the fresh ELs are `--el` (by default the source's kind):
//! `--el op-reth-2` measures op-reth 2.x's import limit and lightcl on op-reth 2.x side by side;
//! a list (`--el op-reth-2,op-reth`) runs each EL in every round and ends with both lines' ratios
//! next to each other (op-reth 2.x against 1.10.2 on the same chain and machine).
//!
//! Usage: bench-catchup --lightcl PATH [--compare PATH] [--blocks N] [--chain optimism|ethereum]
//!        [--el EL[,EL...]] [--rounds R] [--requests K]   (EL: geth, op-geth, reth, op-reth,
//!        op-reth-2; `--requests K`, Ethereum: a deposit in every K-th block and 10 withdrawal
//!        requests in every 50th, which lightcl rebuilds from the source's logs)
//!
//! With several rounds (limit, raw, JSON, each on a fresh EL, repeated), the figures are medians:
//! on a shared 2-core machine one run's ratio moves by several percent. `--compare PATH` runs
//! another lightcl binary (an earlier commit: see scripts/bench-compare.sh) in the same rounds,
//! right after each run of this one, so that both see the same machine.

use std::time::{Duration, Instant};

use lightcl_testbed::bench::Args;
use lightcl_testbed::genesis::{DEPOSIT_EMITTER, ETH_CHAIN_ID, deposit_calldata, requests_genesis};
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::node::{cpu_seconds, memory_mib};
use lightcl_testbed::producer::{forkchoice, new_payload};
use lightcl_testbed::{ChainKind, ElClient, ElNode, NodeOptions, Producer, TxMix};

/// The same forkchoice cadence as lightcl (geth ignores payloads >128 blocks ahead of its head).
const FCU_EVERY: u64 = 64;

#[tokio::main]
async fn main() {
    lightcl_testbed::bench::finish("bench-catchup", bench().await);
}

async fn bench() -> Result<(), String> {
    let args =
        Args::parse(&["--blocks", "--chain", "--el", "--rounds", "--compare", "--requests"])?;
    let lightcl = args.lightcl.clone();
    // Another lightcl binary (an earlier commit) measured in the same rounds, on the same chain.
    let compare = args.text("--compare").map(std::path::PathBuf::from);
    let mut labels: Vec<(&str, &std::path::Path, &str)> =
        vec![("raw", &lightcl, "raw"), ("json", &lightcl, "json")];
    if let Some(c) = &compare {
        labels.insert(1, ("raw, compared", c, "raw"));
        labels.push(("json, compared", c, "json"));
        println!("compared: {} (this run) against {}", lightcl.display(), c.display());
    }
    let blocks = args.get("--blocks", 2000u64)?;
    let rounds = args.get("--rounds", 1usize)?.max(1);
    let kind = match args.text("--chain").unwrap_or("optimism") {
        "optimism" => ChainKind::Optimism,
        "ethereum" => ChainKind::Ethereum,
        o => return Err(format!("unknown chain {o}")),
    };
    // The ELs decide the chain when given; several (`--el op-reth-2,op-reth`) are measured side
    // by side, each round running every one of them.
    let mut followers = args.els()?;
    if followers.is_empty() {
        followers.push(ElClient::default_for(kind));
    }
    let kind = followers[0].chain();
    if let Some(other) = followers.iter().find(|f| f.chain() != kind) {
        return Err(format!("--el {other} runs another chain than {}", followers[0]));
    }
    let e = |e: lightcl_testbed::Error| e.to_string();

    // Ethereum: `--requests K` puts a deposit in every K-th block, and 10 withdrawal requests
    // (taken in the same block) in every 50th, for lightcl to rebuild from the logs. None are
    // left queued: a block that takes queued requests needs the parent's state, which a full
    // node source no longer has 128 blocks on (see docs/operators.md).
    let every = args.get("--requests", 0u64)?;
    if every > 0 && kind != ChainKind::Ethereum {
        return Err("--requests needs an Ethereum chain (--chain ethereum)".into());
    }
    let mut opts = NodeOptions::of(ElClient::default_for(kind), "bench-source");
    if every > 0 {
        let ts = u64::from_str_radix(
            opts.genesis["timestamp"].as_str().unwrap_or("0x0").trim_start_matches("0x"),
            16,
        )
        .map_err(|e| e.to_string())?;
        opts.genesis = requests_genesis(ETH_CHAIN_ID, ts);
    }
    let src = ElNode::spawn_with(opts).await.map_err(e)?;
    let mut p = Producer::new(&src).await.map_err(e)?;
    let t = Instant::now();
    if every == 0 {
        p.build_many(blocks, TxMix::new(4, 2)).await.map_err(e)?;
    } else {
        let queue = alloy_eips::eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS;
        let fee = alloy_primitives::U256::from(1_000_000_000u64);
        for n in 1..=blocks {
            if n % every == 0 {
                p.call_in_next_block(DEPOSIT_EMITTER, deposit_calldata(n as u8));
            }
            if n % 50 == 0 {
                for k in 0..10u8 {
                    let data = [[k; 48].as_slice(), &u64::from(k).to_be_bytes()].concat();
                    p.paid_call_in_next_block(queue, data.into(), fee);
                }
            }
            p.build(TxMix::new(4, 2)).await.map_err(e)?;
        }
        let with = p
            .blocks(1, blocks)
            .iter()
            .filter(|b| b.requests.as_array().is_some_and(|r| !r.is_empty()))
            .count();
        println!("source: {with} of {blocks} blocks carry execution requests");
    }
    p.set_labels(blocks, blocks).await.map_err(e)?;
    let txs: usize = p.blocks(1, blocks).iter().map(|b| b.tx_count).sum();
    println!(
        "source: {blocks} {} blocks, {txs} transactions, built in {:.1}s",
        kind.name(),
        t.elapsed().as_secs_f64()
    );
    wire_bytes(&src, blocks).await?;
    let names: Vec<String> = followers.iter().map(|f| describe(*f)).collect();
    println!("follower EL: {}", names.join("; "));
    let sibling = |follower: ElClient, name: &str| NodeOptions {
        genesis: src.genesis().clone(),
        ..NodeOptions::of(follower, name)
    };

    // Rounds of, for each follower EL: its own limit (payloads already in memory, fed
    // back-to-back to a fresh EL), then lightcl with raw blocks, then with JSON blocks, each on
    // a fresh EL.
    let mut limits: Vec<Vec<(Duration, f64)>> = vec![Vec::new(); followers.len()];
    let mut runs: Vec<Vec<(&str, Run)>> = (0..followers.len()).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, &follower) in followers.iter().enumerate() {
            let limit_el =
                ElNode::spawn_with(sibling(follower, &format!("bench-limit-{i}-{round}")))
                    .await
                    .map_err(e)?;
            limits[i].push(import_limit(&limit_el, &p, blocks).await?);
            drop(limit_el);
            for (k, &(label, bin, fetch)) in labels.iter().enumerate() {
                let name = format!("bench-follower-{i}-{k}-{round}");
                let el = ElNode::spawn_with(sibling(follower, &name)).await.map_err(e)?;
                runs[i].push((label, follow(bin, &src, &el, &p, blocks, fetch).await?));
            }
            let l = limits[i][round].0.as_secs_f64();
            let of = |f: &str| {
                runs[i].iter().rev().find(|(k, _)| *k == f).map(|(_, r)| r.time.as_secs_f64())
            };
            let el = if followers.len() > 1 { format!("{follower}: ") } else { String::new() };
            let line = |what: &str, raw: &str, json: &str| {
                let (r, j) = (of(raw), of(json));
                println!(
                    "round {}: {el}{what}raw {:.2}s (ratio {:.3}), json {:.2}s (ratio {:.3})",
                    round + 1,
                    r.unwrap_or(0.0),
                    l / r.unwrap_or(f64::INFINITY),
                    j.unwrap_or(0.0),
                    l / j.unwrap_or(f64::INFINITY),
                );
            };
            line(&format!("limit {l:.2}s, "), "raw", "json");
            if compare.is_some() {
                line("compared binary: ", "raw, compared", "json, compared");
            }
        }
    }
    let mut summary = Vec::new();
    for (i, name) in names.iter().enumerate() {
        println!("medians over {rounds} round(s), follower EL {name}:");
        summary.push(report(blocks, &labels, &limits[i], &runs[i]));
    }
    if followers.len() > 1 {
        println!("side by side (medians; ratio = the EL's own limit / lightcl's time):");
        for (f, (limit, raw, json)) in followers.iter().zip(&summary) {
            println!(
                "  {f:<10} limit {limit:>8.2}s {:>8.1} blocks/s   raw ratio {raw:.3}   json ratio \
                 {json:.3}",
                blocks as f64 / limit
            );
        }
    }
    Ok(())
}

/// Bytes on the wire per block as lightcl fetches them (its own source client, batches of
/// 64), raw and JSON, with the answers compressed (gzip, as providers serve them) and not:
/// counted by a proxy in front of the source.
async fn wire_bytes(src: &ElNode, blocks: u64) -> Result<(), String> {
    use lightcl::config::{Fetch, SourceEntry};
    use lightcl::source::{RpcSource, Source};
    use lightcl_testbed::proxy::{ProviderRules, Proxy};
    let mut line = Vec::new();
    for (name, fetch) in [("raw", Fetch::Raw), ("json", Fetch::Json)] {
        let mut per_block = [0.0f64; 2];
        for (k, gzip) in [false, true].into_iter().enumerate() {
            let proxy = Proxy::start(vec![src.http_url()]).await.map_err(|e| e.to_string())?;
            proxy.set_rules(ProviderRules { gzip, ..ProviderRules::default() });
            let source =
                RpcSource::new(&SourceEntry::Url(proxy.url().to_string()), Duration::from_secs(30))
                    .with_fetch(fetch);
            let mut from = 1;
            while from <= blocks {
                let count = 64.min(blocks - from + 1);
                let got = source.blocks(from, count).await.map_err(|e| e.to_string())?;
                if got.len() as u64 != count || got.iter().any(Option::is_none) {
                    return Err(format!("{name}: blocks {from}.. not all served"));
                }
                from += count;
            }
            per_block[k] = proxy.bytes_out() as f64 / blocks as f64;
        }
        line.push(format!(
            "{name} {:.0} B plain, {:.0} B gzip ({:.1}x smaller)",
            per_block[0],
            per_block[1],
            per_block[0] / per_block[1].max(1.0)
        ));
    }
    println!("source bytes per block on the wire: {}", line.join("; "));
    Ok(())
}

/// The EL's name with the version its binary prints (op-reth 2.x prints the reth it is built
/// on: the cache's link name says which line it is).
fn describe(client: ElClient) -> String {
    let version = client
        .binary()
        .ok()
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let target = client
        .binary()
        .ok()
        .and_then(|b| b.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    format!("{client} ({target}; {version})")
}

/// Prints one follower EL's medians; returns (limit seconds, raw ratio, JSON ratio).
fn report(
    blocks: u64,
    labels: &[(&str, &std::path::Path, &str)],
    limits: &[(Duration, f64)],
    runs: &[(&str, Run)],
) -> (f64, f64, f64) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let limit = median(limits.iter().map(|(d, _)| d.as_secs_f64()).collect());
    let limit_cpu = median(limits.iter().map(|(_, c)| *c).collect());
    let of = |fetch: &str, f: &dyn Fn(&Run) -> f64| {
        median(runs.iter().filter(|(k, _)| *k == fetch).map(|(_, r)| f(r)).collect())
    };

    let rate = |secs: f64| blocks as f64 / secs;
    println!("EL import limit (in-memory payloads): {limit:>8.2}s  {:>8.1} blocks/s", rate(limit));
    for &(fetch, _, _) in labels {
        let t = of(fetch, &|r| r.time.as_secs_f64());
        println!(
            "lightcl, fetch = {fetch:<4} (verified):   {t:>8.2}s  {:>8.1} blocks/s  ratio {:.3}",
            rate(t),
            limit / t
        );
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let per_k = |cpu: f64| cpu * 1000.0 / blocks as f64;
    println!("CPU seconds per 1000 blocks ({cores} cores; limit run EL: {:.2}):", per_k(limit_cpu));
    for &(fetch, _, _) in labels {
        println!(
            "  fetch = {fetch:<4}  lightcl {:>6.2}  source EL {:>6.2}  follower EL {:>6.2}  \
             lightcl peak RSS {:.1} MiB",
            per_k(of(fetch, &|r| r.lightcl_cpu)),
            per_k(of(fetch, &|r| r.source_cpu)),
            per_k(of(fetch, &|r| r.el_cpu)),
            of(fetch, &|r| r.peak_rss_mib)
        );
    }
    let time = |f: &str| of(f, &|r| r.time.as_secs_f64());
    println!(
        "raw / json: time {:.3}, lightcl CPU {:.3}, source EL CPU {:.3}",
        time("raw") / time("json"),
        of("raw", &|r| r.lightcl_cpu) / of("json", &|r| r.lightcl_cpu).max(1e-9),
        of("raw", &|r| r.source_cpu) / of("json", &|r| r.source_cpu).max(1e-9)
    );
    (limit, limit / time("raw"), limit / time("json"))
}

/// Feeds the producer's blocks from memory into `el` back to back: the EL's own import limit
/// (time, and the EL's CPU seconds).
async fn import_limit(el: &ElNode, p: &Producer, blocks: u64) -> Result<(Duration, f64), String> {
    let e = |e: lightcl_testbed::Error| e.to_string();
    let payloads = p.blocks(1, blocks);
    let g = p.genesis().hash;
    let cpu0 = el.pid().and_then(cpu_seconds).unwrap_or(0.0);
    let t = Instant::now();
    for b in &payloads {
        let s = new_payload(&el.engine, b).await.map_err(e)?;
        if !s.is_valid() {
            return Err(format!("importer: block {} answered {}", b.number, s.status));
        }
        if b.number % FCU_EVERY == 0 || b.number == blocks {
            forkchoice(&el.engine, b.hash, g, g).await.map_err(e)?;
        }
    }
    Ok((t.elapsed(), el.pid().and_then(cpu_seconds).unwrap_or(0.0) - cpu0))
}

/// One lightcl catch-up run.
struct Run {
    time: Duration,
    lightcl_cpu: f64,
    source_cpu: f64,
    el_cpu: f64,
    peak_rss_mib: f64,
}

/// lightcl fills `el` from `src` up to block `blocks` with `fetch`.
async fn follow(
    lightcl: &std::path::Path,
    src: &ElNode,
    el: &ElNode,
    p: &Producer,
    blocks: u64,
    fetch: &str,
) -> Result<Run, String> {
    let e = |e: lightcl_testbed::Error| e.to_string();
    let mut cfg = FollowerConfig::new(src, el);
    cfg.poll_interval_ms = 50;
    cfg.extra = format!("fetch = \"{fetch}\"");
    let toml = cfg.to_toml().replace("level = \"info,lightcl=debug\"", "level = \"info\"");
    let src_cpu0 = src.pid().and_then(cpu_seconds).unwrap_or(0.0);
    let el_cpu0 = el.pid().and_then(cpu_seconds).unwrap_or(0.0);
    let t = Instant::now();
    let lc = Lightcl::start_with_args(lightcl, &toml, &["run"]).map_err(e)?;
    let target = p.hash_at(blocks).ok_or("no tip")?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if el.head().await.map_err(e)?.hash == target {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("lightcl did not catch up in 30 min; log:\n{}", lc.log()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let time = t.elapsed();
    if let Some(cost) = lc.source_cost().await {
        println!("  {fetch} blocks: {cost}");
    }
    let pid = lc.pid();
    let run = Run {
        time,
        lightcl_cpu: pid.and_then(cpu_seconds).unwrap_or(0.0),
        source_cpu: src.pid().and_then(cpu_seconds).unwrap_or(0.0) - src_cpu0,
        el_cpu: el.pid().and_then(cpu_seconds).unwrap_or(0.0) - el_cpu0,
        peak_rss_mib: pid.and_then(|p| memory_mib(p, "VmHWM")).unwrap_or(0.0),
    };
    drop(lc);
    Ok(run)
}
