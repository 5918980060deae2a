//! One partition of a topic: its segments, recovery on open, the writer
//! thread that group-commits appends, reads of durable records, retention.

use super::segment::{IndexEntry, ScanEnd, Segment, parse_log_file_name};
use super::{LogError, LogRecord, PartitionOffsets, record};
use crate::config::{FsyncPolicy, StorageConfig, VerifyOnStart};
use bytes::Bytes;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, oneshot};

/// Most append requests folded into one write + fsync.
const MAX_GROUP: usize = 1024;
/// How often the writer thread checks retention when idle.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// State shared by the writer thread and readers.
#[derive(Debug)]
struct Shared {
    segments: RwLock<Vec<Arc<Segment>>>,
    /// The offset after the last durable record: readers see only below it.
    durable_end: AtomicU64,
    /// The oldest retained offset.
    start: AtomicU64,
    /// Woken after each durable append (shared by the topic's partitions).
    appended: Arc<Notify>,
}

/// A request to the writer thread.
struct AppendRequest {
    payloads: Vec<Bytes>,
    reply: oneshot::Sender<Result<u64, LogError>>,
}

/// A partition log: cheap to share; appends go to its writer thread.
#[derive(Debug)]
pub(crate) struct Partition {
    shared: Arc<Shared>,
    sender: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Partition {
    /// Opens (recovering) or creates the partition stored in `dir`.
    pub(crate) fn open(
        dir: &Path,
        config: &StorageConfig,
        appended: Arc<Notify>,
    ) -> Result<Partition, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let (segments, writer_file, next_offset) = recover(dir, config)?;
        let start = segments.first().map_or(0, |s| s.base_offset);
        let active = segments
            .last()
            .cloned()
            .ok_or_else(|| LogError::Failed(format!("{}: no active segment", dir.display())))?;
        let shared = Arc::new(Shared {
            segments: RwLock::new(segments),
            durable_end: AtomicU64::new(next_offset),
            start: AtomicU64::new(start),
            appended,
        });
        let (sender, receiver) = mpsc::channel();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            config: config.clone(),
            shared: Arc::clone(&shared),
            active,
            file: writer_file,
            next_offset,
            since_index: 0,
            unsynced: false,
            failed: None,
        };
        let name = format!("log-writer {}", dir.display());
        let handle = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || writer.run(&receiver))
            .map_err(|e| LogError::io(dir, e))?;
        Ok(Partition {
            shared,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Appends records; resolves with the first record's offset once they
    /// are durable under the fsync policy.
    pub(crate) fn append(&self, payloads: Vec<Bytes>) -> oneshot::Receiver<Result<u64, LogError>> {
        let (reply, receiver) = oneshot::channel();
        let request = AppendRequest { payloads, reply };
        let sent = self
            .sender
            .lock()
            .ok()
            .and_then(|guard| guard.as_ref().map(|s| s.send(request)));
        if let Some(Err(mpsc::SendError(request))) = sent {
            let _ = request.reply.send(Err(LogError::Closed));
        }
        // If the partition is closed, `reply` was dropped: the receiver
        // reports that, and the caller maps it to `LogError::Closed`.
        receiver
    }

    /// Start and end offsets of durable data.
    pub(crate) fn offsets(&self) -> PartitionOffsets {
        PartitionOffsets {
            start: self.shared.start.load(Ordering::Acquire),
            end: self.shared.durable_end.load(Ordering::Acquire),
        }
    }

    /// Deletes the closed segments whose records all lie below `offset`
    /// (the active segment always stays; the writer only touches that
    /// one); returns the new start.
    pub(crate) fn truncate_before(&self, offset: u64) -> Result<u64, LogError> {
        let mut segments = self.shared.segments.write().map_err(|_| LogError::Closed)?;
        while segments.len() > 1 && segments[1].base_offset <= offset {
            // Readers see the new start before the files disappear.
            self.shared
                .start
                .store(segments[1].base_offset, Ordering::Release);
            let oldest = segments.remove(0);
            oldest.remove_files()?;
        }
        Ok(self.shared.start.load(Ordering::Acquire))
    }

    /// Reads up to `max_records` durable records from `from` on (or from
    /// the oldest retained one if `from` is older).
    pub(crate) fn read(&self, from: u64, max_records: usize) -> Result<Vec<LogRecord>, LogError> {
        let end = self.shared.durable_end.load(Ordering::Acquire);
        let from = from.max(self.shared.start.load(Ordering::Acquire));
        let mut records = Vec::new();
        if from >= end || max_records == 0 {
            return Ok(records);
        }
        let segments: Vec<Arc<Segment>> = {
            let all = self.shared.segments.read().map_err(|_| LogError::Closed)?;
            let first = all
                .partition_point(|s| s.base_offset <= from)
                .saturating_sub(1);
            all[first..].to_vec()
        };
        for segment in segments {
            let mut next = from.max(segment.base_offset);
            let position = segment.position_for(next);
            let scan = segment.scan(position, segment.size(), |_, record| {
                if record.offset >= end {
                    return false;
                }
                if record.offset >= next {
                    next = record.offset + 1;
                    records.push(LogRecord {
                        offset: record.offset,
                        timestamp_ms: record.timestamp_ms,
                        payload: Bytes::copy_from_slice(record.payload),
                    });
                }
                records.len() < max_records
            })?;
            if let ScanEnd::Bad { position, reason } = scan {
                return Err(segment.corrupt(position, reason));
            }
            if records.len() >= max_records || next >= end {
                break;
            }
        }
        Ok(records)
    }

    /// The first durable offset whose record was appended at or after
    /// `timestamp_ms`; the end offset if none was.
    pub(crate) fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        let end = self.shared.durable_end.load(Ordering::Acquire);
        let segments: Vec<Arc<Segment>> = self
            .shared
            .segments
            .read()
            .map_err(|_| LogError::Closed)?
            .clone();
        // Start in the last segment whose first record is older than the
        // time (append times only grow within a partition).
        let mut first = 0;
        for (i, segment) in segments.iter().enumerate() {
            let mut older = false;
            segment.scan(0, segment.size(), |_, record| {
                older = record.timestamp_ms < timestamp_ms;
                false
            })?;
            if !older {
                break;
            }
            first = i;
        }
        let mut found = None;
        for segment in &segments[first..] {
            segment.scan(0, segment.size(), |_, record| {
                if record.offset < end && record.timestamp_ms >= timestamp_ms {
                    found = Some(record.offset);
                }
                found.is_none() && record.offset + 1 < end
            })?;
            if found.is_some() {
                break;
            }
        }
        Ok(found.unwrap_or(end))
    }

    /// Stops the writer after it has finished (and synced) what it took.
    pub(crate) fn close(&self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.close();
    }
}

/// The base offsets of the segment files in a partition directory, sorted.
fn segment_bases(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_log_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens the segments of a partition directory: older segments are trusted
/// (their indexes loaded or rebuilt), the newest is scanned record by record;
/// a torn tail is truncated, anything else inconsistent is an error.
fn recover(dir: &Path, config: &StorageConfig) -> Result<(Vec<Arc<Segment>>, File, u64), LogError> {
    let bases = segment_bases(dir)?;
    if bases.is_empty() {
        let (segment, file) = Segment::create(dir, 0)?;
        return Ok((vec![Arc::new(segment)], file, 0));
    }
    let verify_all = config.verify_on_start == VerifyOnStart::All;
    let mut segments = Vec::with_capacity(bases.len());
    let last = bases.len() - 1;
    let mut expected_base = None;
    for (i, base) in bases.iter().copied().enumerate() {
        let segment = Segment::open_in(dir, base)?;
        let size = segment.size();
        if i < last && (verify_all || !segment.load_index_file(size)) {
            let checked = check(&segment, config.index_interval_bytes)?;
            if let Some((position, reason)) = checked.torn_at {
                return Err(segment.corrupt(position, format!("{reason} in a closed segment")));
            }
            if verify_all && expected_base.is_some_and(|expected| expected != base) {
                return Err(segment.corrupt(
                    0,
                    format!("segment starts at offset {base}, expected {expected_base:?}"),
                ));
            }
            expected_base = Some(checked.next_offset);
            segment.set_index(checked.index);
            segment.write_index_file()?;
        }
        segments.push(segment);
    }
    let active = &segments[last];
    let next_offset = validate_active(active, config)?;
    let file = active.open_writer()?;
    Ok((
        segments.into_iter().map(Arc::new).collect(),
        file,
        next_offset,
    ))
}

/// A segment checked record by record.
struct Checked {
    /// The offset after the last valid record.
    next_offset: u64,
    /// A sparse index of the valid records.
    index: Vec<IndexEntry>,
    /// Where an invalid tail starts (nothing valid follows it), and why.
    torn_at: Option<(u64, &'static str)>,
}

/// Checks every record of a segment: checksum, offsets contiguous from the
/// base. An invalid record with valid records after it is corruption (an
/// error); an invalid tail is reported as torn.
fn check(segment: &Segment, index_interval: u64) -> Result<Checked, LogError> {
    let size = segment.size();
    let mut expected = segment.base_offset;
    let mut indexer = SparseIndexer::new(index_interval);
    let mut gap = None;
    let end = segment.scan(0, size, |position, record| {
        if record.offset != expected {
            gap = Some((position, record.offset));
            return false;
        }
        indexer.observe(position, record);
        expected += 1;
        true
    })?;
    if let Some((position, found)) = gap {
        return Err(segment.corrupt(
            position,
            format!("expected offset {expected}, found {found}"),
        ));
    }
    let mut torn_at = None;
    if let ScanEnd::Bad { position, reason } = end {
        let last_good = expected
            .checked_sub(1)
            .filter(|&o| o >= segment.base_offset);
        if segment.valid_record_after(position, size, last_good)? {
            return Err(segment.corrupt(
                position,
                format!("{reason} at offset {expected}, and valid records follow it: this is not a torn write"),
            ));
        }
        torn_at = Some((position, reason));
    }
    Ok(Checked {
        next_offset: expected,
        index: indexer.entries,
        torn_at,
    })
}

/// Checks the newest segment, truncates a torn tail, and returns the next
/// offset to write.
fn validate_active(segment: &Segment, config: &StorageConfig) -> Result<u64, LogError> {
    let checked = check(segment, config.index_interval_bytes)?;
    if let Some((position, reason)) = checked.torn_at {
        tracing::warn!(
            segment = %segment.log_path.display(),
            position,
            dropped_bytes = segment.size() - position,
            reason,
            "truncating torn tail of the active segment (an append that was never acknowledged)"
        );
        segment.truncate(position)?;
    }
    segment.set_index(checked.index);
    segment.write_index_file()?;
    Ok(checked.next_offset)
}

/// What `verify` found in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCheck {
    /// Segment files checked.
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// A torn tail of the newest segment (file, byte position): harmless,
    /// it is truncated at the next start.
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Checks every record of every segment of a partition directory without
/// changing anything.
pub(crate) fn verify(dir: &Path) -> Result<PartitionCheck, LogError> {
    let bases = segment_bases(dir)?;
    let mut report = PartitionCheck {
        segments: bases.len(),
        records: 0,
        torn_tail: None,
    };
    let mut expected_base = None;
    for (i, base) in bases.iter().copied().enumerate() {
        let segment = Segment::open_in(dir, base)?;
        if expected_base.is_some_and(|expected| expected != base) {
            return Err(segment.corrupt(
                0,
                format!("segment starts at offset {base}, expected {expected_base:?}"),
            ));
        }
        let checked = check(&segment, u64::MAX)?;
        if let Some((position, reason)) = checked.torn_at {
            if i + 1 < bases.len() {
                return Err(segment.corrupt(position, format!("{reason} in a closed segment")));
            }
            report.torn_tail = Some((segment.log_path.clone(), position));
        }
        report.records += checked.next_offset - base;
        expected_base = Some(checked.next_offset);
    }
    Ok(report)
}

/// Builds a sparse index while scanning: one entry per
/// `interval` bytes of records, starting with the first record.
struct SparseIndexer {
    interval: u64,
    since: u64,
    entries: Vec<IndexEntry>,
}

impl SparseIndexer {
    fn new(interval: u64) -> Self {
        Self {
            interval,
            since: u64::MAX,
            entries: Vec::new(),
        }
    }

    fn observe(&mut self, position: u64, record: record::RecordRef<'_>) {
        if self.since >= self.interval {
            self.entries.push(IndexEntry {
                offset: record.offset,
                position,
            });
            self.since = 0;
        }
        self.since += record::frame_len(record.payload.len()) as u64;
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    config: StorageConfig,
    shared: Arc<Shared>,
    /// The segment being appended to (the last of `shared.segments`).
    active: Arc<Segment>,
    file: File,
    next_offset: u64,
    since_index: u64,
    unsynced: bool,
    /// Set after an I/O error the writer could not undo: later appends fail.
    failed: Option<String>,
}

impl Writer {
    fn run(&mut self, receiver: &mpsc::Receiver<AppendRequest>) {
        let mut last_retention = Instant::now();
        loop {
            let timeout = match self.config.fsync {
                FsyncPolicy::Interval(interval) if self.unsynced => interval,
                _ => RETENTION_CHECK_INTERVAL,
            };
            match receiver.recv_timeout(timeout) {
                Ok(first) => {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match receiver.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                    self.commit(group);
                }
                Err(RecvTimeoutError::Timeout) => self.sync_if_unsynced(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync_if_unsynced();
                    return;
                }
            }
            if last_retention.elapsed() >= RETENTION_CHECK_INTERVAL {
                self.apply_retention();
                last_retention = Instant::now();
            }
        }
    }

    fn sync_if_unsynced(&mut self) {
        if self.unsynced {
            match self.file.sync_data() {
                Ok(()) => self.unsynced = false,
                Err(e) => tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed"),
            }
        }
    }

    /// Writes a group of requests with one write and one fsync, then
    /// publishes the new durable end and answers every request.
    fn commit(&mut self, group: Vec<AppendRequest>) {
        if let Some(reason) = &self.failed {
            for request in group {
                let _ = request.reply.send(Err(LogError::Failed(reason.clone())));
            }
            return;
        }
        let timestamp_ms = crate::model::now_unix_ms();
        let mut buf = Vec::new();
        let mut answers = Vec::with_capacity(group.len());
        for request in group {
            let size: usize = request
                .payloads
                .iter()
                .map(|p| record::frame_len(p.len()))
                .sum();
            let used = self.active.size() + buf.len() as u64;
            let rolls = used > 0 && used + size as u64 > self.config.segment_bytes;
            if rolls && let Err(e) = self.write_buffer(&mut buf).and_then(|()| self.roll()) {
                self.fail(&e, answers, Some(request));
                return;
            }
            let base = self.next_offset;
            for payload in &request.payloads {
                let position = self.active.size() + buf.len() as u64;
                if self.since_index >= self.config.index_interval_bytes || position == 0 {
                    self.active.push_index(IndexEntry {
                        offset: self.next_offset,
                        position,
                    });
                    self.since_index = 0;
                }
                let before = buf.len();
                record::encode(&mut buf, self.next_offset, timestamp_ms, payload);
                self.since_index += (buf.len() - before) as u64;
                self.next_offset += 1;
            }
            answers.push((request.reply, base));
        }
        if let Err(e) = self
            .write_buffer(&mut buf)
            .and_then(|()| self.sync_per_policy())
        {
            self.fail(&e, answers, None);
            return;
        }
        self.shared
            .durable_end
            .store(self.next_offset, Ordering::Release);
        self.shared.appended.notify_waiters();
        for (reply, base) in answers {
            let _ = reply.send(Ok(base));
        }
    }

    fn write_buffer(&mut self, buf: &mut Vec<u8>) -> Result<(), LogError> {
        if buf.is_empty() {
            return Ok(());
        }
        let segment = Arc::clone(&self.active);
        self.file
            .write_all(buf)
            .map_err(|e| LogError::io(&segment.log_path, e))?;
        segment.grow(buf.len() as u64);
        self.unsynced = true;
        buf.clear();
        Ok(())
    }

    fn sync_per_policy(&mut self) -> Result<(), LogError> {
        if self.config.fsync == FsyncPolicy::Always && self.unsynced {
            let segment = Arc::clone(&self.active);
            self.file
                .sync_data()
                .map_err(|e| LogError::io(&segment.log_path, e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Closes the active segment (synced, index written) and starts a new one.
    fn roll(&mut self) -> Result<(), LogError> {
        let old = Arc::clone(&self.active);
        self.file
            .sync_all()
            .map_err(|e| LogError::io(&old.log_path, e))?;
        self.unsynced = false;
        // Everything written so far is now on disk.
        self.shared
            .durable_end
            .store(self.next_offset, Ordering::Release);
        old.write_index_file()?;
        let (segment, file) = Segment::create(&self.dir, self.next_offset)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.since_index = 0;
        self.active = Arc::new(segment);
        if let Ok(mut segments) = self.shared.segments.write() {
            segments.push(Arc::clone(&self.active));
        }
        self.apply_retention();
        Ok(())
    }

    /// Answers every request of a failed group with the error. Records
    /// written by the failed group are cut off again so the file never
    /// holds unacknowledged data ahead of later appends; if even that fails,
    /// the partition refuses further appends until restart.
    fn fail(
        &mut self,
        error: &LogError,
        answers: Vec<(oneshot::Sender<Result<u64, LogError>>, u64)>,
        pending: Option<AppendRequest>,
    ) {
        tracing::error!(dir = %self.dir.display(), %error, "append failed");
        let durable = self.shared.durable_end.load(Ordering::Acquire);
        self.next_offset = durable;
        let segment = Arc::clone(&self.active);
        let undo = segment
            .scan(0, segment.size(), |_, record| record.offset < durable)
            .and_then(|end| match end {
                ScanEnd::Clean { position } | ScanEnd::Bad { position, .. } => {
                    let position = if durable > segment.base_offset {
                        position
                    } else {
                        0
                    };
                    self.file
                        .set_len(position)
                        .map_err(|e| LogError::io(&segment.log_path, e))?;
                    segment.set_size(position);
                    Ok(())
                }
            });
        if let Err(undo_error) = undo {
            self.failed = Some(format!(
                "{error}; then could not undo the partial write: {undo_error}"
            ));
        }
        for (reply, _) in answers {
            let _ = reply.send(Err(LogError::Failed(error.to_string())));
        }
        if let Some(request) = pending {
            let _ = request.reply.send(Err(LogError::Failed(error.to_string())));
        }
    }

    /// Deletes closed segments past the retention limits.
    fn apply_retention(&mut self) {
        let retention = &self.config.retention;
        if retention.max_bytes.is_none() && retention.max_age.is_none() {
            return;
        }
        let Ok(mut segments) = self.shared.segments.write() else {
            return;
        };
        let mut total: u64 = segments.iter().map(|s| s.size()).sum();
        let now = SystemTime::now();
        while segments.len() > 1 {
            let oldest = &segments[0];
            let too_big = retention.max_bytes.is_some_and(|max| total > max);
            let too_old = retention.max_age.is_some_and(|max| {
                oldest
                    .modified()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > max)
            });
            if !too_big && !too_old {
                break;
            }
            let next_start = segments[1].base_offset;
            // Readers see the new start before the files disappear.
            self.shared.start.store(next_start, Ordering::Release);
            let oldest = segments.remove(0);
            total -= oldest.size();
            tracing::info!(segment = %oldest.log_path.display(), too_big, too_old, "retention deleted segment");
            if let Err(e) = oldest.remove_files() {
                tracing::error!(error = %e, "retention could not delete a segment");
            }
        }
    }
}

/// fsyncs a directory so a created or renamed file in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}
