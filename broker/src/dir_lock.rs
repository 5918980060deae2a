//! One broker per data directory: an exclusive lock on `DATA_DIR/LOCK`,
//! held for the life of the process. Two brokers writing the same segment
//! files, offsets and schedule would corrupt each other; a second start on
//! a directory in use fails at once, naming the directory and the holder.
//!
//! The lock is the operating system's (`flock`), so it goes away with its
//! process however that ends — a SIGKILL leaves no stale lock behind. The
//! file also holds the holder's pid, for the error message only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another process holds the lock.
    #[error(
        "data directory {dir} is in use by another broker (pid {holder}); stop it, or give this one its own --data-dir"
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The pid the holder wrote, or "unknown".
        holder: String,
    },
    /// The directory or its lock file could not be opened.
    #[error("cannot lock data directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Creates `dir` when missing and locks it for this process.
    pub fn acquire(dir: &Path) -> Result<DirLock, DirLockError> {
        let io = |source| DirLockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(DirLockError::InUse {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path()).expect("first");
        let error = DirLock::acquire(dir.path()).expect_err("second");
        let text = error.to_string();
        assert!(text.contains("in use"), "{text}");
        assert!(
            text.contains(&std::process::id().to_string()),
            "names the holder's pid: {text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(first);
        DirLock::acquire(dir.path()).expect("free again");
    }
}
