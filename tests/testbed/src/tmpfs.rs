//! A small tmpfs of our own, to see what an EL does when the filesystem holding its datadir runs
//! out of room. Mounting needs root; where it cannot be done the caller skips with the reason.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// The signal a process gets for a write to a mapped page its filesystem cannot back.
pub const SIGBUS: i32 = libc::SIGBUS;

/// A mounted tmpfs, unmounted (lazily, so a busy mount still goes) when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    dir: TempDir,
    filler: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (a mount option such as `64m`) on a fresh folder; an error says
    /// why not (not root, no mount permission).
    pub fn mount(size: &str) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("lightcl-tmpfs-")
            .tempdir()
            .map_err(|e| format!("mount point: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let filler = dir.path().join("filler");
        Ok(Self { dir, filler })
    }

    /// The mounted folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes still free on it.
    pub fn free_bytes(&self) -> u64 {
        let Ok(c) = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()) else {
            return 0;
        };
        // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(c.as_ptr(), &mut st) != 0 {
                return 0;
            }
            st.f_bavail as u64 * st.f_frsize as u64
        }
    }

    /// Fills it with a file until only about `leave` bytes are free.
    pub fn fill_leaving(&self, leave: u64) -> std::io::Result<()> {
        let mut f = File::options().create(true).append(true).open(&self.filler)?;
        let chunk = vec![0xa5u8; 64 * 1024];
        while self.free_bytes() > leave + chunk.len() as u64 {
            f.write_all(&chunk)?;
            f.flush()?;
        }
        Ok(())
    }

    /// Deletes the filler: the room comes back.
    pub fn free_up(&self) -> std::io::Result<()> {
        match fs::remove_file(&self.filler) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
