//! One segment: a `<base offset>.log` file of framed records and its sparse
//! `<base offset>.index` of `(relative offset u32, position u32)` pairs.
//! The index is derived data: rebuilt from the log whenever it is missing
//! or does not fit the log.

use super::LogError;
use super::record::{self, Decoded, RecordRef};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Width of the zero-padded base offset in segment file names.
const NAME_DIGITS: usize = 20;
/// Bytes read from disk at a time while scanning.
const READ_CHUNK: usize = 256 * 1024;

/// A sparse index entry: the record at `offset` starts at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) offset: u64,
    pub(crate) position: u64,
}

/// A segment file shared by the writer and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) log_path: PathBuf,
    index_path: PathBuf,
    file: File,
    index: RwLock<Vec<IndexEntry>>,
    /// Bytes of complete records in the file.
    size: AtomicU64,
}

/// How a scan over a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Stopped cleanly at `position` (end of data, or the visitor said stop).
    Clean { position: u64 },
    /// A record at `position` is incomplete or invalid.
    Bad { position: u64, reason: &'static str },
}

/// The file name of the segment starting at `base_offset`.
pub(crate) fn log_file_name(base_offset: u64) -> String {
    format!("{base_offset:0NAME_DIGITS$}.log")
}

/// Parses a segment file name back into its base offset.
pub(crate) fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == NAME_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl Segment {
    /// Creates an empty segment file (fails if it exists).
    pub(crate) fn create(dir: &Path, base_offset: u64) -> Result<(Segment, File), LogError> {
        let log_path = dir.join(log_file_name(base_offset));
        let writer = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LogError::io(&log_path, e))?;
        let segment = Self::open_existing(base_offset, log_path, 0)?;
        Ok((segment, writer))
    }

    /// Opens an existing segment file for reading; `size` is how many bytes
    /// of it hold complete records.
    pub(crate) fn open_existing(
        base_offset: u64,
        log_path: PathBuf,
        size: u64,
    ) -> Result<Segment, LogError> {
        let file = File::open(&log_path).map_err(|e| LogError::io(&log_path, e))?;
        Ok(Segment {
            base_offset,
            index_path: log_path.with_extension("index"),
            log_path,
            file,
            index: RwLock::new(Vec::new()),
            size: AtomicU64::new(size),
        })
    }

    /// Opens the existing segment of `dir` that starts at `base_offset`,
    /// all of its file counted as records (recovery checks that).
    pub(crate) fn open_in(dir: &Path, base_offset: u64) -> Result<Segment, LogError> {
        let log_path = dir.join(log_file_name(base_offset));
        let size = std::fs::metadata(&log_path)
            .map_err(|e| LogError::io(&log_path, e))?
            .len();
        Self::open_existing(base_offset, log_path, size)
    }

    /// Opens the writer handle of this segment, positioned at its end.
    pub(crate) fn open_writer(&self) -> Result<File, LogError> {
        OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .map_err(|e| LogError::io(&self.log_path, e))
    }

    /// Bytes of complete records.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Records that `bytes` more bytes of complete records were written.
    pub(crate) fn grow(&self, bytes: u64) {
        self.size.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Sets the size after recovery truncated the file.
    pub(crate) fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    /// Adds an index entry (entries must come in increasing order).
    pub(crate) fn push_index(&self, entry: IndexEntry) {
        if let Ok(mut index) = self.index.write() {
            index.push(entry);
        }
    }

    /// Replaces the in-memory index.
    pub(crate) fn set_index(&self, entries: Vec<IndexEntry>) {
        if let Ok(mut index) = self.index.write() {
            *index = entries;
        }
    }

    /// Position to start scanning from to find `offset`.
    pub(crate) fn position_for(&self, offset: u64) -> u64 {
        let Ok(index) = self.index.read() else {
            return 0;
        };
        let at = index.partition_point(|entry| entry.offset <= offset);
        at.checked_sub(1).map_or(0, |i| index[i].position)
    }

    /// Writes the in-memory index to the index file (derived data, no fsync).
    pub(crate) fn write_index_file(&self) -> Result<(), LogError> {
        let entries = self.index.read().map(|i| i.clone()).unwrap_or_default();
        let mut bytes = Vec::with_capacity(entries.len() * 8);
        for entry in entries {
            bytes.extend_from_slice(&((entry.offset - self.base_offset) as u32).to_le_bytes());
            bytes.extend_from_slice(&(entry.position as u32).to_le_bytes());
        }
        let mut file =
            File::create(&self.index_path).map_err(|e| LogError::io(&self.index_path, e))?;
        file.write_all(&bytes)
            .map_err(|e| LogError::io(&self.index_path, e))
    }

    /// Loads the index file if it is consistent with a log of `size` bytes;
    /// returns false (and loads nothing) when it must be rebuilt.
    pub(crate) fn load_index_file(&self, size: u64) -> bool {
        let Ok(bytes) = std::fs::read(&self.index_path) else {
            return false;
        };
        if bytes.len() % 8 != 0 {
            return false;
        }
        let mut entries = Vec::with_capacity(bytes.len() / 8);
        for chunk in bytes.chunks_exact(8) {
            let relative = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let entry = IndexEntry {
                offset: self.base_offset + u64::from(relative),
                position: u64::from(position),
            };
            let ordered = entries.last().is_none_or(|last: &IndexEntry| {
                last.offset < entry.offset && last.position < entry.position
            });
            if !ordered || entry.position >= size {
                return false;
            }
            entries.push(entry);
        }
        self.set_index(entries);
        true
    }

    /// Visits records from byte `position` on, up to `limit` bytes of the
    /// file, until `visit` returns false or the data ends.
    pub(crate) fn scan(
        &self,
        mut position: u64,
        limit: u64,
        mut visit: impl FnMut(u64, RecordRef<'_>) -> bool,
    ) -> Result<ScanEnd, LogError> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if position >= limit {
                return Ok(ScanEnd::Clean { position });
            }
            let want = (limit - position).min(buf.len() as u64) as usize;
            let filled = self.read_at(&mut buf[..want], position)?;
            let mut consumed = 0usize;
            loop {
                match record::decode(&buf[consumed..filled]) {
                    Decoded::Record { record, frame_len } => {
                        let at = position + consumed as u64;
                        consumed += frame_len;
                        if !visit(at, record) {
                            return Ok(ScanEnd::Clean {
                                position: position + consumed as u64,
                            });
                        }
                    }
                    Decoded::Incomplete { needed } => {
                        let at = position + consumed as u64;
                        let end_of_data = filled < want || position + filled as u64 >= limit;
                        if end_of_data {
                            return Ok(if consumed == filled {
                                ScanEnd::Clean { position: at }
                            } else {
                                ScanEnd::Bad {
                                    position: at,
                                    reason: "record is incomplete",
                                }
                            });
                        }
                        if consumed == 0 && filled + needed > buf.len() {
                            // A record larger than the buffer: grow it.
                            buf.resize(filled + needed, 0);
                        }
                        break;
                    }
                    Decoded::Corrupt { reason } => {
                        return Ok(ScanEnd::Bad {
                            position: position + consumed as u64,
                            reason,
                        });
                    }
                }
            }
            position += consumed as u64;
        }
    }

    /// Reads as many bytes as are there at `position`, up to `buf.len()`.
    fn read_at(&self, buf: &mut [u8], position: u64) -> Result<usize, LogError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self
                .file
                .read_at(&mut buf[filled..], position + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LogError::io(&self.log_path, e)),
            }
        }
        Ok(filled)
    }

    /// Whether any checksum-valid record with an offset above `after`
    /// starts somewhere in `[from, limit)`. Used by recovery to tell a torn
    /// tail (nothing valid follows) from corruption in the middle.
    pub(crate) fn valid_record_after(
        &self,
        from: u64,
        limit: u64,
        after: Option<u64>,
    ) -> Result<bool, LogError> {
        let len = (limit.saturating_sub(from)) as usize;
        let mut bytes = vec![0u8; len];
        let filled = self.read_at(&mut bytes, from)?;
        let bytes = &bytes[..filled];
        Ok(
            (1..bytes.len()).any(|start| match record::decode(&bytes[start..]) {
                Decoded::Record { record, .. } => after.is_none_or(|after| record.offset > after),
                _ => false,
            }),
        )
    }

    /// The error for a bad record at `position` of this segment.
    pub(crate) fn corrupt(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            path: self.log_path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// Shrinks the file to `size` bytes (recovery of a torn tail).
    pub(crate) fn truncate(&self, size: u64) -> Result<(), LogError> {
        let file = OpenOptions::new()
            .write(true)
            .open(&self.log_path)
            .map_err(|e| LogError::io(&self.log_path, e))?;
        file.set_len(size)
            .and_then(|()| file.sync_all())
            .map_err(|e| LogError::io(&self.log_path, e))?;
        self.set_size(size);
        Ok(())
    }

    /// Deletes the segment's files (retention).
    pub(crate) fn remove_files(&self) -> Result<(), LogError> {
        std::fs::remove_file(&self.log_path).map_err(|e| LogError::io(&self.log_path, e))?;
        match std::fs::remove_file(&self.index_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LogError::io(&self.index_path, e))
            }
            _ => Ok(()),
        }
    }

    /// When the segment was last written (its newest record's age, for
    /// retention by time).
    pub(crate) fn modified(&self) -> Option<std::time::SystemTime> {
        self.file.metadata().and_then(|m| m.modified()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_offset() {
        assert_eq!(log_file_name(42), "00000000000000000042.log");
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
    }
}
