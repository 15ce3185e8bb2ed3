//! A self-contained local devnet: an op-geth source chain with a block producer, a fresh EL (op-reth
//! 2.x, the production OP line, where it is installed; op-geth otherwise), and lightcl following
//! it. Prints progress until Ctrl-C.
//!
//! Usage: devnet [--lightcl PATH] [--prebuilt N] [--block-time-ms MS]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use lightcl_testbed::lightcl::FollowerConfig;
use lightcl_testbed::{ChainKind, ElClient, ElNode, NodeOptions, Producer, TxMix};

struct Args {
    lightcl: PathBuf,
    prebuilt: u64,
    block_time: Duration,
}

fn parse_args() -> Result<Args, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut args = Args {
        lightcl: exe.with_file_name("lightcl"),
        prebuilt: 200,
        block_time: Duration::from_millis(1000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--lightcl" => args.lightcl = PathBuf::from(val()?),
            "--prebuilt" => {
                args.prebuilt = val()?.parse().map_err(|e| format!("--prebuilt: {e}"))?
            }
            "--block-time-ms" => {
                let ms: u64 = val()?.parse().map_err(|e| format!("--block-time-ms: {e}"))?;
                args.block_time = Duration::from_millis(ms.max(100));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !args.lightcl.is_file() {
        return Err(format!(
            "lightcl binary not found at {} (build it, or pass --lightcl)",
            args.lightcl.display()
        ));
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    if let Err(e) = devnet().await {
        eprintln!("devnet: {e}");
        std::process::exit(1);
    }
}

async fn devnet() -> Result<(), String> {
    let args = parse_args()?;
    let err = |e: lightcl_testbed::Error| e.to_string();
    println!("devnet: starting the source op-geth");
    let src = ElNode::spawn(ChainKind::Optimism, "devnet-source").await.map_err(err)?;
    // Realtime timestamps: the chain's clock follows the wall clock once it has caught up.
    let follower = ElClient::follower_for(ChainKind::Optimism);
    let opts = NodeOptions::of(follower, "devnet-follower");
    let mut p = Producer::new(&src).await.map_err(err)?.with_realtime(false);
    println!("devnet: producing {} blocks with transactions on the source", args.prebuilt);
    p.build_many(args.prebuilt, TxMix::new(2, 1)).await.map_err(err)?;
    set_labels(&mut p).await?;
    let opts = NodeOptions { genesis: src.genesis().clone(), ..opts };
    println!("devnet: starting a fresh {follower} for lightcl to fill");
    let el = ElNode::spawn_with(opts).await.map_err(err)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = dir.path().join("lightcl.toml");
    let cfg = FollowerConfig { poll_interval_ms: 500, ..FollowerConfig::new(&src, &el) };
    let toml = cfg.to_toml().replace("level = \"info,lightcl=debug\"", "level = \"info\"");
    // The finality floor lives with the devnet, not in the system default (/var/lib/lightcl).
    let toml = format!("state_dir = {:?}\n{toml}", dir.path().join("state").display().to_string());
    std::fs::write(&config, toml).map_err(|e| e.to_string())?;
    println!("devnet: source JSON-RPC {}  follower EL JSON-RPC {}", src.http_url(), el.http_url());
    println!("devnet: starting lightcl ({}); Ctrl-C stops everything", args.lightcl.display());
    let mut cmd = Command::new(&args.lightcl);
    cmd.arg("run").arg("--config").arg(&config).stdin(Stdio::null());
    // SAFETY: prctl only: lightcl dies with the devnet.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start lightcl: {e}"))?;
    let mut tick = tokio::time::interval(args.block_time);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                p.build(TxMix::new(2, 1)).await.map_err(err)?;
                set_labels(&mut p).await?;
                n += 1;
                if n.is_multiple_of(5) {
                    let s = p.head();
                    let f = el.head().await.map_err(err)?;
                    let fs = el.block("safe").await.map_err(err)?.map_or(0, |b| b.number);
                    let ff = el.block("finalized").await.map_err(err)?.map_or(0, |b| b.number);
                    println!("devnet: source head #{} | follower head #{} safe #{fs} finalized #{ff}", s.number, f.number);
                }
            }
        }
    }
    println!("devnet: stopping");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
    Ok(())
}

/// The source's labels: safe 4 blocks behind the head, finalized 8 behind.
async fn set_labels(p: &mut Producer) -> Result<(), String> {
    let h = p.head().number;
    p.set_labels(h.saturating_sub(4), h.saturating_sub(8)).await.map_err(|e| e.to_string())?;
    Ok(())
}
