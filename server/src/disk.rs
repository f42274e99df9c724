//! The data directory's disk: free space, and the ballast file that keeps some of it in
//! reserve.
//!
//! A store that cannot write stops its node (see `start::serve`), so a full disk takes
//! the node down at once rather than leaving it answering with nothing behind it. To
//! bring it back, an operator needs room for the restart (RocksDB writes a new manifest
//! and WAL when it opens) before any real space is freed: the ballast is that room. It is
//! a file of `ballast_size` bytes, really allocated, at `DATA_DIR/ballast`; deleting it
//! frees the space at once (docs/operations.md, "Disk full"). A node recreates it at
//! startup only while the disk has at least twice its size free, so a restart on a
//! nearly full disk never fills it again. The idea is CockroachDB's.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::errors::ServerError;

/// The ballast's file name inside the data directory.
pub const BALLAST_FILE: &str = "ballast";

/// The default ballast: 1% of the data directory's filesystem, at most 1 GiB.
pub fn default_ballast_size(dir: &Path) -> u64 {
    space(dir)
        .map(|s| (s.total / 100).min(1 << 30))
        .unwrap_or(0)
}

/// A filesystem's size and free space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    /// Free to unprivileged writers (what RocksDB can use).
    pub available: u64,
}

/// The space of the filesystem holding `dir`; `None` if it cannot be read.
pub fn space(dir: &Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    Some(Space {
        total: st.f_blocks as u64 * block,
        available: st.f_bavail as u64 * block,
    })
}

/// What [`ensure_ballast`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ballast {
    /// The ballast is in place (created now or earlier) with this many bytes.
    Present(u64),
    /// No ballast: it is disabled (size 0) or the disk has too little free space for it.
    Absent { reason: String },
}

/// Makes sure `dir` holds a ballast of `size` bytes (0: none wanted), creating it when
/// the disk has at least twice that free.
pub fn ensure_ballast(dir: &Path, size: u64) -> Result<Ballast, ServerError> {
    let path = dir.join(BALLAST_FILE);
    if size == 0 {
        return Ok(Ballast::Absent {
            reason: "disabled (--ballast-size 0)".into(),
        });
    }
    if let Ok(meta) = std::fs::metadata(&path) {
        return Ok(Ballast::Present(meta.len()));
    }
    let available = space(dir).map_or(0, |s| s.available);
    if available < size.saturating_mul(2) {
        let reason = format!("only {available} bytes free, less than twice the ballast's {size}");
        return Ok(Ballast::Absent { reason });
    }
    allocate(&path, size).map_err(|source| ServerError::DataDir {
        path: path.clone(),
        source,
    })?;
    Ok(Ballast::Present(size))
}

/// Reserves `size` bytes of really allocated space at `path` (a sparse file would
/// reserve nothing): `posix_fallocate`, which filesystems without it emulate by writing.
/// Under a temporary name first, so that a crash never leaves a short ballast.
fn allocate(path: &Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let tmp: PathBuf = path.with_extension("tmp");
    let file = File::create(&tmp)?;
    let len =
        libc::off_t::try_from(size).map_err(|_| std::io::Error::other("ballast size too large"))?;
    // SAFETY: a valid open file descriptor and a non-negative range.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ballast_is_created_once_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ensure_ballast(dir.path(), 3 << 20).unwrap(),
            Ballast::Present(3 << 20)
        );
        let on_disk = std::fs::metadata(dir.path().join(BALLAST_FILE)).unwrap();
        assert_eq!(on_disk.len(), 3 << 20);
        // Really allocated: a sparse file would occupy (almost) no blocks.
        use std::os::unix::fs::MetadataExt;
        assert!(
            on_disk.blocks() * 512 >= 3 << 20,
            "{} blocks",
            on_disk.blocks()
        );
        assert_eq!(
            ensure_ballast(dir.path(), 5 << 20).unwrap(),
            Ballast::Present(3 << 20)
        );
        assert!(matches!(
            ensure_ballast(dir.path(), 0).unwrap(),
            Ballast::Absent { .. }
        ));
    }

    #[test]
    fn no_ballast_when_the_disk_is_nearly_full() {
        let dir = tempfile::tempdir().unwrap();
        let free = space(dir.path()).unwrap().available;
        match ensure_ballast(dir.path(), free).unwrap() {
            Ballast::Absent { reason } => assert!(reason.contains("twice"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join(BALLAST_FILE).exists());
    }
}
