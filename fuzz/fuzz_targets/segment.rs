//! The on-disk record decoder and recovery, as the broker meets them:
//! arbitrary bytes become the only segment of a partition, then the log
//! is opened (torn-tail recovery, index rebuild), read to its end, and
//! verified offline. Opening may refuse with an error naming the corrupt
//! position; it must never panic, and what it serves must be gap-free
//! records whose payloads the model decoder can be handed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use switchyard_broker::config::{FsyncPolicy, StorageConfig};
use switchyard_broker::log::{self, EmbeddedLog, EventLog};
use switchyard_broker::model::{StoredEvent, TopicName};

fn storage() -> StorageConfig {
    StorageConfig {
        fsync: FsyncPolicy::Never,
        ..StorageConfig::default()
    }
}

/// A data directory holding topic `t` with one partition; returns it and
/// the path of the partition's segment file.
fn template() -> &'static (PathBuf, PathBuf) {
    static TEMPLATE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let dir = PathBuf::from(base).join(format!("switchyard-fuzz-segment-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = EmbeddedLog::open(&dir, &storage()).expect("open");
        let topic = TopicName::new("t").expect("name");
        log.create_topic(&topic, 1).expect("topic");
        log.close();
        let segment = find_segment(&dir).expect("a segment file");
        (dir, segment)
    })
}

fn find_segment(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_segment(&path) {
                return Some(found);
            }
        } else if path.extension().is_some_and(|e| e == "log") {
            return Some(path);
        }
    }
    None
}

fn remove_indexes(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_indexes(&path);
        } else if path.extension().is_some_and(|e| e == "index") {
            let _ = std::fs::remove_file(path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (dir, segment) = template();
    remove_indexes(dir);
    std::fs::write(segment, data).expect("write segment");
    let _ = log::verify(dir);
    let Ok(opened) = EmbeddedLog::open(dir, &storage()) else {
        return;
    };
    let topic = TopicName::new("t").expect("name");
    let mut expected = 0;
    let scanned = log::scan(&opened, &topic, 0, 0, |record| {
        assert_eq!(record.offset, expected, "offsets are gap-free");
        expected += 1;
        let _ = StoredEvent::from_bytes(&record.payload);
        std::ops::ControlFlow::Continue(())
    });
    if scanned.is_ok() {
        let end = opened.offsets(&topic, 0).expect("offsets").end;
        assert_eq!(expected, end, "every offset below the end is served");
    }
    opened.close();
});
