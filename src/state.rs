//! The state file: the finality floor (the highest finalized block lightcl ever sent or read
//! back), kept across restarts of lightcl and crashes of the EL. An EL can come back from a
//! crash with its finalized block at genesis; the floor is how lightcl still knows where
//! finality was.
//!
//! One small JSON file, `floor.json` in `state_dir` (in `state_dir/<name>` for each replica of
//! a fleet), written atomically (temporary file, fsync, rename, fsync of the folder). It names
//! the chain id, so a file of another chain is refused. `state_dir` is locked while lightcl runs
//! ([`StateLock`]): a second process on the same folder would overwrite the floor.
//!
//! The floor is a fact about the chain (a block lightcl saw finalized), not about one EL: when an
//! operator moves from one `[engine]` to `[[engines]]` or back, or adds a replica, the highest
//! floor of the folder follows ([`carry_over`]) instead of being forgotten.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chain::BlockRef;

/// File name of the floor in `state_dir`.
pub const FLOOR_FILE: &str = "floor.json";
/// File name of the lock in `state_dir`.
pub const LOCK_FILE: &str = "lightcl.lock";
/// Format version written in the file.
const FORMAT: u32 = 1;

/// What went wrong with the state file. Each names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The folder or file cannot be read or written.
    #[error(
        "state file {path}: {message}. lightcl keeps its finality floor there; make state_dir a \
         folder lightcl can write (systemd: StateDirectory=lightcl gives /var/lib/lightcl)"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The file does not parse.
    #[error(
        "state file {path} is corrupt ({message}). lightcl will not guess where finality was: \
         restore the file from a backup, or, if the EL's finalized block is right, delete the \
         file and start again (see the runbook, \"State file\")"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// Another process holds the folder.
    #[error(
        "state folder {path} is in use by another lightcl process ({holder}). Two processes on \
         one state folder would overwrite each other's finality floor: stop the other one, or \
         give this one its own state_dir"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as it wrote in the file.
        holder: String,
    },
    /// The file belongs to another chain.
    #[error(
        "state file {path} is for chain id {found}, but this lightcl follows chain id {expected}. \
         Point state_dir at this chain's folder; if the chain was deliberately rebuilt, delete \
         the file (see the runbook, \"State file\")"
    )]
    OtherChain {
        /// The file.
        path: PathBuf,
        /// Chain id in the file.
        found: u64,
        /// Configured chain id.
        expected: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    format: u32,
    chain_id: u64,
    floor: BlockRef,
}

/// The floor's file (or, for simulations, a shared cell standing in for it).
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    chain_id: u64,
    memory: Option<std::sync::Arc<std::sync::Mutex<Option<BlockRef>>>>,
}

/// Where a replica's floor is kept, and the floor the file held when it was opened.
#[derive(Debug)]
pub struct ReplicaState {
    /// The state file (or memory cell).
    pub file: StateFile,
    /// The floor it held at start (`None`: a new file).
    pub floor: Option<BlockRef>,
}

impl From<(StateFile, Option<BlockRef>)> for ReplicaState {
    fn from((file, floor): (StateFile, Option<BlockRef>)) -> Self {
        Self { file, floor }
    }
}

impl StateFile {
    /// Opens (creating the folder) the state of `chain_id` in `dir` and reads the floor it holds
    /// (`None`: a new file).
    pub fn open(dir: &Path, chain_id: u64) -> Result<(Self, Option<BlockRef>), StateError> {
        let path = dir.join(FLOOR_FILE);
        let io = |e: std::io::Error| StateError::Io { path: path.clone(), message: e.to_string() };
        fs::create_dir_all(dir).map_err(io)?;
        let (file, floor) = Self::read(dir, chain_id)?;
        // Prove now, before the first engine write, that the folder is writable.
        if floor.is_none() {
            let probe = dir.join(".write-test");
            fs::write(&probe, b"").and_then(|()| fs::remove_file(&probe)).map_err(io)?;
        }
        Ok((file, floor))
    }

    /// Reads the floor in `dir` without creating anything (`None`: no file).
    fn read(dir: &Path, chain_id: u64) -> Result<(Self, Option<BlockRef>), StateError> {
        let path = dir.join(FLOOR_FILE);
        let io = |e: std::io::Error| StateError::Io { path: path.clone(), message: e.to_string() };
        let file = Self { path: path.clone(), chain_id, memory: None };
        let floor = match fs::read_to_string(&path) {
            Ok(text) => {
                let d: OnDisk = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                if d.format != FORMAT {
                    return Err(StateError::Corrupt {
                        path,
                        message: format!("unknown format {}", d.format),
                    });
                }
                if d.chain_id != chain_id {
                    return Err(StateError::OtherChain {
                        path,
                        found: d.chain_id,
                        expected: chain_id,
                    });
                }
                Some(d.floor)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        Ok((file, floor))
    }

    /// A state kept in `cell` instead of a file (simulations: the cell outlives a restart).
    pub fn memory(
        cell: std::sync::Arc<std::sync::Mutex<Option<BlockRef>>>,
    ) -> (Self, Option<BlockRef>) {
        let floor = *crate::util::lock(&cell);
        (Self { path: PathBuf::from("<memory>"), chain_id: 0, memory: Some(cell) }, floor)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `floor` atomically and durably.
    pub fn store(&self, floor: BlockRef) -> Result<(), StateError> {
        if let Some(cell) = &self.memory {
            *crate::util::lock(cell) = Some(floor);
            return Ok(());
        }
        let io =
            |e: std::io::Error| StateError::Io { path: self.path.clone(), message: e.to_string() };
        let text =
            serde_json::to_vec_pretty(&OnDisk { format: FORMAT, chain_id: self.chain_id, floor })
                .map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = fs::File::create(&tmp).map_err(io)?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

/// The lock on `state_dir`, held while lightcl runs (released when dropped, or by the kernel
/// when the process dies: an advisory lock on `lightcl.lock`, which names the holder's pid).
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
}

impl StateLock {
    /// Takes the lock on `dir` (creating it), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(LOCK_FILE);
        let io = |e: std::io::Error| StateError::Io { path: path.clone(), message: e.to_string() };
        fs::create_dir_all(dir).map_err(io)?;
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let holder =
                    if holder.is_empty() { "pid unknown".to_string() } else { holder.to_string() };
                return Err(StateError::Locked { path, holder });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        write!(file, "pid {}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// The highest floor any state file of `state_dir`'s layouts holds: `state_dir/floor.json` (one
/// `[engine]`) and `state_dir/<name>/floor.json` (each replica of a fleet, this one's or an
/// earlier one's), with the file it is in. A file that is corrupt or of another chain is
/// refused, naming it: it may be the one that holds the floor.
pub fn family_floor(
    state_dir: &Path,
    chain_id: u64,
) -> Result<Option<(PathBuf, BlockRef)>, StateError> {
    let mut dirs = vec![state_dir.to_path_buf()];
    if let Ok(entries) = fs::read_dir(state_dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    let mut best: Option<(PathBuf, BlockRef)> = None;
    for dir in dirs.into_iter().filter(|d| d.join(FLOOR_FILE).is_file()) {
        if let (_, Some(floor)) = StateFile::read(&dir, chain_id)?
            && best.as_ref().is_none_or(|(_, b)| floor.number > b.number)
        {
            best = Some((dir.join(FLOOR_FILE), floor));
        }
    }
    Ok(best)
}

/// Raises the floor in `target` (a replica's state folder: `state_dir` itself for one
/// `[engine]`, `state_dir/<name>` in a fleet) to the highest floor of `state_dir`'s layouts
/// ([`family_floor`]) where that is higher. The floor is a fact about the chain (a block lightcl
/// saw finalized), not about one EL: moving from one `[engine]` to `[[engines]]` or back,
/// adding a replica, or renaming one keeps it. Returns the file it came from and the floor,
/// when it raised it.
pub fn carry_over(
    state_dir: &Path,
    target: &Path,
    chain_id: u64,
) -> Result<Option<(PathBuf, BlockRef)>, StateError> {
    let Some((from, floor)) = family_floor(state_dir, chain_id)? else { return Ok(None) };
    let (file, own) = StateFile::open(target, chain_id)?;
    if own.is_some_and(|o| o.number >= floor.number) {
        return Ok(None);
    }
    file.store(floor)?;
    Ok(Some((from, floor)))
}

#[cfg(test)]
mod tests {
    use alloy_primitives::B256;

    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().expect("tmp");
        let (f, floor) = StateFile::open(dir.path(), 10).expect("open");
        assert_eq!(floor, None);
        let b = BlockRef::new(42, B256::repeat_byte(4));
        f.store(b).expect("store");
        assert_eq!(StateFile::open(dir.path(), 10).expect("reopen").1, Some(b));
        let other = StateFile::open(dir.path(), 11).expect_err("other chain");
        assert!(matches!(other, StateError::OtherChain { found: 10, expected: 11, .. }), "{other}");
        assert!(other.to_string().contains(FLOOR_FILE), "names the file: {other}");
        fs::write(dir.path().join(FLOOR_FILE), "{not json").expect("write");
        let bad = StateFile::open(dir.path(), 10).expect_err("corrupt");
        assert!(matches!(bad, StateError::Corrupt { .. }), "{bad}");
        assert!(bad.to_string().contains(FLOOR_FILE), "names the file: {bad}");
    }

    #[test]
    fn a_second_lock_on_one_folder_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("tmp");
        let held = StateLock::acquire(dir.path()).expect("first");
        let e = StateLock::acquire(dir.path()).expect_err("second");
        assert!(matches!(e, StateError::Locked { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains(LOCK_FILE), "names the file: {text}");
        drop(held);
        StateLock::acquire(dir.path()).expect("free again once released");
    }

    #[test]
    fn the_floor_follows_a_move_between_one_engine_and_a_fleet() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        let b = |n| BlockRef::new(n, B256::repeat_byte(n as u8));
        let floor_in = |d: &Path| StateFile::open(d, 10).expect("open").1;
        // One [engine] before: its floor goes to each replica of the fleet.
        StateFile::open(root, 10).expect("open").0.store(b(40)).expect("store");
        let (a, c) = (root.join("a"), root.join("c"));
        let got = carry_over(root, &a, 10).expect("carry");
        assert_eq!(got.map(|g| g.1), Some(b(40)));
        assert_eq!(floor_in(&a), Some(b(40)));
        // The fleet finalizes more; a replica added later gets the highest floor of its
        // siblings, not the old one.
        StateFile::open(&a, 10).expect("a").0.store(b(50)).expect("store");
        assert_eq!(carry_over(root, &a, 10).expect("again"), None, "own floor is the highest");
        let got = carry_over(root, &c, 10).expect("new replica");
        assert_eq!(got, Some((a.join(FLOOR_FILE), b(50))));
        // Back to one [engine]: the stale state_dir/floor.json is raised to the fleet's.
        let got = carry_over(root, root, 10).expect("back");
        assert_eq!(got.map(|g| g.1), Some(b(50)));
        assert_eq!(floor_in(root), Some(b(50)));
        // A floor is never lowered.
        StateFile::open(root, 10).expect("root").0.store(b(70)).expect("store");
        assert_eq!(carry_over(root, root, 10).expect("higher"), None);
        assert_eq!(floor_in(root), Some(b(70)));
        // A file of the family for another chain is refused, naming it.
        let d = dir.path().join("fleet2");
        StateFile::open(&d.join("x"), 11).expect("x").0.store(b(9)).expect("store");
        let e = carry_over(&d, &d, 10).expect_err("other chain");
        assert!(e.to_string().contains("fleet2"), "{e}");
    }
}
