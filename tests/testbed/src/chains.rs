//! Source chains built once and reused between test runs.
//!
//! Several end-to-end tests need a source EL that already holds hundreds or thousands of blocks
//! (2,000 with transactions for the bootstrap tests). Building them through the Engine API takes
//! most of such a test. [`cached_source`] builds a chain once, stops the EL gracefully, and
//! keeps a copy of its datadir, its genesis and the producer's record of every block in
//! `.cache/chains/` (or `TESTBED_CHAIN_CACHE`). Every test then gets its own **copy** of that
//! datadir under a fresh EL process: tests stay independent, none shares a live EL.
//!
//! An entry is keyed by the test's name for the chain, the EL program, and a fingerprint of
//! the test bed's chain-building sources (genesis, transactions, producer, node flags, this
//! file) and the EL binary (path, size, modification time). A change to any of them builds
//! afresh and removes the entries it replaces. The build closure lives in the calling test and
//! is **not** in the fingerprint: its key must name what it builds (blocks, transaction mix,
//! labels) and change whenever it does. Entries older than [`MAX_AGE`] are rebuilt too (the
//! default genesis is dated a day back; chains stay well inside that), and an entry that does
//! not resume is rebuilt once. Delete the folder to force a rebuild.
//!
//! The first use in a run builds the chain and then goes through the same copy path as every
//! later use, so a cold run proves the cached path as well.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use alloy_primitives::{B256, keccak256};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::producer::{BuiltBlock, Producer, replay};
use crate::{ElClient, ElNode, Error, NodeOptions, repo_root};

/// How long a cached chain is reused.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// What decides a chain's blocks, besides the EL binary: the sources that build it.
const BUILD_SOURCES: [&str; 6] = [
    include_str!("genesis.rs"),
    include_str!("txs.rs"),
    include_str!("producer.rs"),
    include_str!("node.rs"),
    include_str!("client.rs"),
    include_str!("chains.rs"),
];

/// The producer's side of a cached chain.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProducerRecord {
    pub(crate) chain: Vec<BuiltBlock>,
    pub(crate) safe: B256,
    pub(crate) finalized: B256,
    pub(crate) salt: u64,
    pub(crate) next_recipient: usize,
}

/// The cache folder.
fn root() -> PathBuf {
    std::env::var_os("TESTBED_CHAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache").join("chains"))
}

/// The fingerprint of the test bed's chain-building code and of `client`'s binary.
fn fingerprint(client: ElClient) -> Result<String, Error> {
    let bin = client.binary()?;
    let meta = std::fs::metadata(&bin).map_err(Error::Io)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let mut all = BUILD_SOURCES.concat().into_bytes();
    all.extend(format!("{}|{}|{mtime}", bin.display(), meta.len()).into_bytes());
    Ok(keccak256(all).to_string()[2..18].to_string())
}

/// One lock per entry in this process: two tests needing the same chain at once build it once.
fn entry_lock(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    locks.entry(name.to_string()).or_default().clone()
}

fn fresh_enough(entry: &Path) -> bool {
    let done = entry.join("producer.json");
    std::fs::metadata(&done)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < MAX_AGE)
}

/// Copies the contents of folder `from` into folder `to` (created if missing).
pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(to).map_err(Error::Io)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .map_err(Error::Io)?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Spawn(format!("cp -a {} {} failed ({status})", from.display(), to.display())))
    }
}

/// A source EL of `client` holding the chain `build` makes on a fresh EL, named `key` (unique
/// per chain shape: `key` must change whenever `build` does). Returns a new EL process on a copy
/// of the cached datadir and a producer that can build on it.
pub async fn cached_source<F>(
    client: ElClient,
    key: &str,
    build: F,
) -> Result<(ElNode, Producer), Error>
where
    F: AsyncFnOnce(&mut Producer) -> Result<(), Error>,
{
    let fp = fingerprint(client)?;
    let name = format!("{key}-{}", client.name());
    let entry = root().join(format!("{name}-{fp}"));
    let lock = entry_lock(&name);
    let _held = lock.lock().await;
    if fresh_enough(&entry) {
        match resume(client, &entry).await {
            Ok(found) => return Ok(found),
            Err(e) => {
                // A damaged entry must not fail every run until it ages out: rebuild it once.
                eprintln!("chains: cached {name} does not resume ({e}); building it again");
                let _ = std::fs::remove_dir_all(&entry);
            }
        }
    }
    build_entry(client, &name, &entry, build).await?;
    resume(client, &entry).await.inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&entry);
    })
}

/// Builds the chain on a fresh EL, stops it, and stores it as `entry` (atomically: a folder
/// beside it, renamed). Removes older entries of the same name.
async fn build_entry<F>(client: ElClient, name: &str, entry: &Path, build: F) -> Result<(), Error>
where
    F: AsyncFnOnce(&mut Producer) -> Result<(), Error>,
{
    let started = std::time::Instant::now();
    let mut node = ElNode::spawn_client(client, "chain-builder").await?;
    let mut p = Producer::new(&node).await?;
    build(&mut p).await?;
    let record = p.record();
    if !node.stop_clean().await? {
        return Err(Error::Spawn(format!(
            "{client} building {name} did not stop on SIGTERM; its datadir is not cached"
        )));
    }
    let parent = root();
    std::fs::create_dir_all(&parent).map_err(Error::Io)?;
    let tmp =
        tempfile::Builder::new().prefix(".building-").tempdir_in(&parent).map_err(Error::Io)?;
    copy_dir(&node.datadir(), &tmp.path().join("datadir"))?;
    let genesis = serde_json::to_vec(node.genesis())
        .map_err(|e| Error::Spawn(format!("genesis does not serialise: {e}")))?;
    std::fs::write(tmp.path().join("genesis.json"), genesis).map_err(Error::Io)?;
    let record = serde_json::to_vec(&record)
        .map_err(|e| Error::Spawn(format!("producer record does not serialise: {e}")))?;
    // Written last: an entry without it is not complete.
    std::fs::write(tmp.path().join("producer.json"), record).map_err(Error::Io)?;
    // Older versions of this chain (another fingerprint), a stale copy of this one, entries
    // of any chain past their age (keys no test uses any more), and builds left half done by a
    // killed run.
    if let Ok(dir) = std::fs::read_dir(&parent) {
        for e in dir.flatten() {
            let file = e.file_name();
            let file = file.to_string_lossy();
            let replaced = file.starts_with(&format!("{name}-")) && file.len() == name.len() + 17;
            let age = |p: &Path| {
                std::fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
            };
            let aged = age(&e.path().join("producer.json")).is_some_and(|a| a > MAX_AGE);
            let abandoned = file.starts_with(".building-")
                && age(&e.path()).is_some_and(|a| a > Duration::from_secs(3600));
            if replaced || aged || abandoned {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let kept = tmp.keep();
    if std::fs::rename(&kept, entry).is_err() {
        // Another test run stored it first; use theirs.
        let _ = std::fs::remove_dir_all(&kept);
    }
    eprintln!("chains: {name} built and cached in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// A new EL on a copy of `entry`'s datadir, brought to the recorded head and labels: blocks
/// the EL did not persist before it stopped (reth keeps recent blocks in memory) are fed again.
async fn resume(client: ElClient, entry: &Path) -> Result<(ElNode, Producer), Error> {
    let read = |f: &str| std::fs::read(entry.join(f)).map_err(Error::Io);
    let genesis: Value = serde_json::from_slice(&read("genesis.json")?)
        .map_err(|e| Error::Spawn(format!("cached genesis of {}: {e}", entry.display())))?;
    let record: ProducerRecord = serde_json::from_slice(&read("producer.json")?)
        .map_err(|e| Error::Spawn(format!("cached chain of {}: {e}", entry.display())))?;
    let opts = NodeOptions {
        genesis,
        seed_datadir: Some(entry.join("datadir")),
        ..NodeOptions::of(client, "source")
    };
    let node = ElNode::spawn_with(opts).await?;
    let have = node.head().await?.number;
    // From the first block it lacks, or its head again (a known block answers VALID): the
    // forkchoice at the end puts the recorded labels back (geth does not keep safe).
    let top = record.chain.last().map_or(0, |b| b.number);
    let from = (have + 1).min(top);
    let refeed: Vec<BuiltBlock> =
        record.chain.iter().filter(|b| b.number >= from).cloned().collect();
    replay(&node, &refeed, record.safe, record.finalized).await?;
    let p = Producer::resume(&node, record).await?;
    Ok((node, p))
}
