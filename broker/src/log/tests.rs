//! Tests of the embedded log: round trips, rolls, recovery from torn tails,
//! refusal of mid-segment corruption, index rebuilds and retention.

use super::*;
use crate::config::{FsyncPolicy, RetentionConfig, StorageConfig, VerifyOnStart};
use futures::executor::block_on;
use proptest::prelude::*;
use std::fs::OpenOptions;
use std::io::Write;

fn small_config() -> StorageConfig {
    StorageConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes: 1024,
        index_interval_bytes: 128,
        default_partitions: 1,
        retention: RetentionConfig::default(),
        verify_on_start: VerifyOnStart::Active,
    }
}

fn topic() -> TopicName {
    TopicName::new("t").expect("valid")
}

fn append_all(log: &EmbeddedLog, payloads: &[Vec<u8>]) {
    for payload in payloads {
        block_on(log.append(&topic(), 0, vec![Bytes::from(payload.clone())])).expect("append");
    }
}

fn read_all(log: &EmbeddedLog) -> Vec<Vec<u8>> {
    let records = log.read(&topic(), 0, 0, usize::MAX).expect("read");
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.offset,
            records[0].offset + i as u64,
            "offsets are contiguous"
        );
    }
    records.into_iter().map(|r| r.payload.to_vec()).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("topics/t/0"))
        .expect("partition dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn payloads(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("event-{i:04}").repeat(i % 7 + 1).into_bytes())
        .collect()
}

#[test]
fn appends_read_back_across_segment_rolls_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = payloads(300);
    {
        let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
        log.create_topic(&topic(), 1).expect("create");
        append_all(&log, &written);
        assert_eq!(read_all(&log), written);
        log.close();
    }
    assert!(segment_files(dir.path()).len() > 5, "segments rolled");
    let log = EmbeddedLog::open(dir.path(), &small_config()).expect("reopen");
    assert_eq!(read_all(&log), written);
    assert_eq!(log.offsets(&topic(), 0).expect("offsets").end, 300);
    // Reads from the middle start at the right record.
    let middle = log.read(&topic(), 0, 157, 3).expect("read");
    assert_eq!(
        middle.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![157, 158, 159]
    );
    assert_eq!(middle[0].payload.to_vec(), written[157]);
    // Appends continue after the recovered end.
    let next =
        block_on(log.append(&topic(), 0, vec![Bytes::from_static(b"after")])).expect("append");
    assert_eq!(next, vec![300]);
}

#[test]
fn records_are_read_at_scattered_offsets_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
    log.create_topic(&topic(), 1).expect("create");
    let written = payloads(200);
    append_all(&log, &written);
    let wanted = [0, 1, 2, 57, 58, 120, 199, 200, 500];
    let records = read_offsets(&log, &topic(), 0, &wanted).expect("read");
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        [0, 1, 2, 57, 58, 120, 199],
        "offsets past the end are left out"
    );
    for record in &records {
        assert_eq!(record.payload.to_vec(), written[record.offset as usize]);
    }
    assert!(
        read_offsets(&log, &topic(), 0, &[])
            .expect("read")
            .is_empty()
    );
    log.close();
}

#[test]
fn offsets_are_found_by_append_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
    log.create_topic(&topic(), 1).expect("create");
    append_all(&log, &payloads(150));
    let records = log.read(&topic(), 0, 0, usize::MAX).expect("read");
    assert_eq!(log.offset_for_time(&topic(), 0, 0).expect("time"), 0);
    assert_eq!(
        log.offset_for_time(&topic(), 0, i64::MAX).expect("time"),
        150,
        "past the end"
    );
    for probe in [1usize, 70, 149] {
        let at = records[probe].timestamp_ms;
        let first_at_or_after = records
            .iter()
            .find(|r| r.timestamp_ms >= at)
            .map(|r| r.offset)
            .expect("exists");
        assert_eq!(
            log.offset_for_time(&topic(), 0, at).expect("time"),
            first_at_or_after
        );
    }
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = payloads(200);
    {
        let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
        log.create_topic(&topic(), 1).expect("create");
        append_all(&log, &written);
        log.close();
    }
    let files = segment_files(dir.path());
    std::fs::remove_file(files[0].with_extension("index")).expect("remove index");
    std::fs::write(files[1].with_extension("index"), b"garbage").expect("damage index");
    let log = EmbeddedLog::open(dir.path(), &small_config()).expect("reopen");
    assert_eq!(read_all(&log), written);
    assert!(files[0].with_extension("index").exists(), "index rewritten");
}

#[test]
fn corruption_in_the_middle_of_the_active_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    {
        let log = EmbeddedLog::open(dir.path(), &config).expect("open");
        log.create_topic(&topic(), 1).expect("create");
        append_all(&log, &payloads(50));
        log.close();
    }
    let file = segment_files(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).expect("write");
    let err = EmbeddedLog::open(dir.path(), &config).expect_err("corrupt");
    let text = err.to_string();
    assert!(matches!(err, LogError::Corrupt { .. }), "{text}");
    assert!(
        text.contains(&file.display().to_string()),
        "names the file: {text}"
    );
    // Nothing was truncated.
    assert_eq!(std::fs::read(&file).expect("read").len(), bytes.len());
}

#[test]
fn reading_a_corrupt_closed_segment_is_an_error_not_a_skip() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
        log.create_topic(&topic(), 1).expect("create");
        append_all(&log, &payloads(100));
        log.close();
    }
    let first = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&first, &bytes).expect("write");
    let log = EmbeddedLog::open(dir.path(), &small_config())
        .expect("closed segments are checked on read");
    let err = log.read(&topic(), 0, 0, 10).expect_err("corrupt read");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
}

#[test]
fn verify_checks_every_segment_and_verify_on_start_all_refuses_closed_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
        log.create_topic(&topic(), 1).expect("create");
        append_all(&log, &payloads(100));
        log.close();
    }
    let report = verify(dir.path()).expect("clean log verifies");
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].2.records, 100);
    assert!(report[0].2.segments > 1);
    assert_eq!(report[0].2.torn_tail, None);

    let first = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&first).expect("read");
    bytes[30] ^= 0x01;
    std::fs::write(&first, &bytes).expect("write");
    let err = verify(dir.path()).expect_err("corruption found");
    assert!(
        err.to_string().contains(&first.display().to_string()),
        "{err}"
    );
    let all = StorageConfig {
        verify_on_start: VerifyOnStart::All,
        ..small_config()
    };
    assert!(matches!(
        EmbeddedLog::open(dir.path(), &all),
        Err(LogError::Corrupt { .. })
    ));
    assert!(
        EmbeddedLog::open(dir.path(), &small_config()).is_ok(),
        "the default checks only the newest segment"
    );
}

#[test]
fn retention_by_age_deletes_closed_segments_older_than_max_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        retention: RetentionConfig {
            max_bytes: None,
            max_age: Some(std::time::Duration::from_secs(3600)),
        },
        ..small_config()
    };
    let log = EmbeddedLog::open(dir.path(), &config).expect("open");
    log.create_topic(&topic(), 1).expect("create");
    append_all(&log, &payloads(100));
    let files = segment_files(dir.path());
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for old in &files[..2] {
        OpenOptions::new()
            .write(true)
            .open(old)
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("age the segment");
    }
    let before = log.offsets(&topic(), 0).expect("offsets").start;
    assert_eq!(before, 0);
    // Retention runs when a segment rolls: append until one does.
    append_all(&log, &payloads(40));
    let offsets = log.offsets(&topic(), 0).expect("offsets");
    let third_base = files[2]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u64>().ok())
        .expect("base offset");
    assert_eq!(
        offsets.start, third_base,
        "exactly the two old segments were deleted"
    );
    assert!(!files[0].exists() && !files[1].exists() && files[2].exists());
}

#[test]
fn retention_by_size_deletes_the_oldest_closed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        retention: RetentionConfig {
            max_bytes: Some(3000),
            max_age: None,
        },
        ..small_config()
    };
    let log = EmbeddedLog::open(dir.path(), &config).expect("open");
    log.create_topic(&topic(), 1).expect("create");
    append_all(&log, &payloads(400));
    let offsets = log.offsets(&topic(), 0).expect("offsets");
    assert!(offsets.start > 0, "old segments deleted");
    assert_eq!(offsets.end, 400);
    let records = log.read(&topic(), 0, 0, usize::MAX).expect("read");
    assert_eq!(records[0].offset, offsets.start);
    assert_eq!(records.last().map(|r| r.offset), Some(399));
    let total: u64 = segment_files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(f).expect("meta").len())
        .sum();
    assert!(
        total <= 3000 + 1024,
        "within max_bytes plus the active segment: {total}"
    );
}

#[test]
fn group_commit_answers_concurrent_appends_with_distinct_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = Arc::new(EmbeddedLog::open(dir.path(), &config).expect("open"));
    log.create_topic(&topic(), 1).expect("create");
    let futures: Vec<_> = (0..200)
        .map(|i| {
            log.append(
                &topic(),
                0,
                vec![Bytes::from(format!("{i}")), Bytes::from("x")],
            )
        })
        .collect();
    let mut bases: Vec<u64> = block_on(futures::future::join_all(futures))
        .into_iter()
        .map(|r| r.expect("append")[0])
        .collect();
    bases.sort_unstable();
    assert_eq!(bases, (0..200).map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn unknown_topics_and_partitions_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
    let missing = TopicName::new("nope").expect("valid");
    assert!(matches!(log.topic(&missing), Err(LogError::TopicNotFound(name)) if name == "nope"));
    log.create_topic(&topic(), 2).expect("create");
    assert!(matches!(
        log.read(&topic(), 5, 0, 1),
        Err(LogError::NoSuchPartition {
            partition: 5,
            partitions: 2,
            ..
        })
    ));
    assert!(matches!(
        log.create_topic(&topic(), 2),
        Err(LogError::TopicExists(_))
    ));
    assert!(matches!(
        log.create_topic(&TopicName::new("z").expect("valid"), 0),
        Err(LogError::InvalidPartitions { .. })
    ));
}

/// How a crash damaged the tail of the active segment.
#[derive(Debug, Clone)]
enum Tear {
    /// The last record lost this many of its bytes (1..=its length).
    CutLast(usize),
    /// Garbage (or zeros) after the last complete record.
    Garbage(Vec<u8>),
    /// The active segment cut at any byte (this seed modulo its length):
    /// records wholly before the cut survive.
    CutAnywhere(u64),
    /// One byte of the last record (this seed modulo its length) XORed with
    /// a non-zero mask: a write that reached the disk half-done.
    FlipInLast(usize, u8),
}

fn tear() -> impl Strategy<Value = Tear> {
    prop_oneof![
        (1usize..10_000).prop_map(Tear::CutLast),
        any::<u64>().prop_map(Tear::CutAnywhere),
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Tear::FlipInLast(at, mask)),
        prop::collection::vec(any::<u8>(), 1..300).prop_map(Tear::Garbage),
        (1usize..300).prop_map(|n| Tear::Garbage(vec![0; n])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Append, tear or corrupt the tail as a crash would (cut at any
    /// byte, the last record cut short or half-written, garbage after it),
    /// recover: every complete record before the damage is kept, nothing
    /// after it appears, and appends continue at the right offset.
    #[test]
    fn recovery_keeps_every_complete_record(
        written in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..60),
        segment_bytes in 256u64..4096,
        tear in tear(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StorageConfig { segment_bytes, ..small_config() };
        {
            let log = EmbeddedLog::open(dir.path(), &config).expect("open");
            log.create_topic(&topic(), 1).expect("create");
            append_all(&log, &written);
            log.close();
        }
        let active = segment_files(dir.path()).pop().expect("segment");
        let len = std::fs::metadata(&active).expect("meta").len();
        let expected = match &tear {
            Tear::CutLast(cut) => {
                let last = record::frame_len(written.last().map_or(0, Vec::len)) as u64;
                let cut = (*cut as u64 - 1) % last + 1;
                OpenOptions::new().write(true).open(&active).expect("open")
                    .set_len(len - cut).expect("truncate");
                written[..written.len() - 1].to_vec()
            }
            Tear::Garbage(bytes) => {
                OpenOptions::new().append(true).open(&active).expect("open")
                    .write_all(bytes).expect("append garbage");
                written.clone()
            }
            Tear::CutAnywhere(seed) => {
                // The active segment holds the last records whose frames
                // add up to its length.
                let frames: Vec<u64> = written.iter().map(|p| record::frame_len(p.len()) as u64).collect();
                let mut in_active = 0;
                let mut sum = 0;
                while sum < len {
                    in_active += 1;
                    sum += frames[frames.len() - in_active];
                }
                prop_assert_eq!(sum, len, "frames tile the active segment");
                let first_active = written.len() - in_active;
                let cut = seed % (len + 1);
                OpenOptions::new().write(true).open(&active).expect("open")
                    .set_len(cut).expect("truncate");
                let mut end = 0;
                let surviving = frames[first_active..]
                    .iter()
                    .take_while(|&&frame| { end += frame; end <= cut })
                    .count();
                written[..first_active + surviving].to_vec()
            }
            Tear::FlipInLast(at, mask) => {
                let last = record::frame_len(written.last().map_or(0, Vec::len)) as u64;
                let position = len - last + (*at as u64 % last);
                let mut bytes = std::fs::read(&active).expect("read");
                bytes[position as usize] ^= mask;
                std::fs::write(&active, bytes).expect("write");
                written[..written.len() - 1].to_vec()
            }
        };
        let log = EmbeddedLog::open(dir.path(), &config).expect("recovers");
        prop_assert_eq!(read_all(&log), expected.clone());
        let next = block_on(log.append(&topic(), 0, vec![Bytes::from_static(b"next")])).expect("append");
        prop_assert_eq!(next, vec![expected.len() as u64]);
        let mut after = expected;
        after.push(b"next".to_vec());
        prop_assert_eq!(read_all(&log), after);
    }
}

#[test]
fn deleting_a_topic_with_the_longest_name_is_complete_and_stays_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = TopicName::user("x".repeat(249)).expect("longest valid name");
    {
        let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
        log.create_topic(&name, 2).expect("create");
        block_on(log.append(&name, 0, vec![Bytes::from_static(b"e")])).expect("append");
        log.delete_topic(&name).expect("delete");
        assert!(log.topic(&name).is_err());
    }
    let log = EmbeddedLog::open(dir.path(), &small_config()).expect("reopen");
    assert!(log.topics().is_empty(), "it did not come back");
}

#[test]
fn a_deletion_interrupted_after_its_rename_is_finished_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path(), &small_config()).expect("open");
        log.create_topic(&topic(), 1).expect("create");
    }
    // A crash between the rename and the removal leaves this behind.
    let topics = dir.path().join("topics");
    std::fs::rename(topics.join("t"), topics.join(".deleted-crashed")).expect("rename");
    let log = EmbeddedLog::open(dir.path(), &small_config()).expect("reopen");
    assert!(log.topics().is_empty());
    assert!(!topics.join(".deleted-crashed").exists());
    assert!(
        TopicName::user(".deleted-x").is_err(),
        "users cannot make one"
    );
}
