//! The state file: the finality floor (the highest finalized block lightcl ever sent or read
//! back), kept across restarts of lightcl and crashes of the EL. An EL can come back from a
//! crash with its finalized block at genesis; the floor is how lightcl still knows where
//! finality was.
//!
//! One small JSON file, `floor.json` in `state_dir`, written atomically (temporary file, fsync,
//! rename, fsync of the folder). It names the chain id, so a file of another chain is refused.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chain::BlockRef;

/// File name of the floor in `state_dir`.
pub const FLOOR_FILE: &str = "floor.json";
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

impl StateFile {
    /// Opens (creating the folder) the state of `chain_id` in `dir` and reads the floor it holds
    /// (`None`: a new file).
    pub fn open(dir: &Path, chain_id: u64) -> Result<(Self, Option<BlockRef>), StateError> {
        let path = dir.join(FLOOR_FILE);
        let io = |e: std::io::Error| StateError::Io { path: path.clone(), message: e.to_string() };
        fs::create_dir_all(dir).map_err(io)?;
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
        // Prove now, before the first engine write, that the folder is writable.
        if floor.is_none() {
            let probe = dir.join(".write-test");
            fs::write(&probe, b"").and_then(|()| fs::remove_file(&probe)).map_err(io)?;
        }
        Ok((file, floor))
    }

    /// A state kept in `cell` instead of a file (simulations: the cell outlives a restart).
    pub fn memory(
        cell: std::sync::Arc<std::sync::Mutex<Option<BlockRef>>>,
    ) -> (Self, Option<BlockRef>) {
        let floor = *cell.lock().unwrap_or_else(|p| p.into_inner());
        (Self { path: PathBuf::from("<memory>"), chain_id: 0, memory: Some(cell) }, floor)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `floor` atomically and durably.
    pub fn store(&self, floor: BlockRef) -> Result<(), StateError> {
        if let Some(cell) = &self.memory {
            *cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(floor);
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
}
