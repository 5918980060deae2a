//! Durable files of a subscription: `subscription.json` (its definition,
//! written last at creation, so its presence marks a complete subscription)
//! and `offsets.json` (committed offset per partition). Both are replaced
//! atomically: write temp → fsync → rename → fsync directory.

use super::DeliveryError;
use crate::config::SubscriptionConfig;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

const DEFINITION: &str = "subscription.json";
const OFFSETS: &str = "offsets.json";

#[derive(Debug, Serialize, Deserialize)]
struct StoredOffsets {
    committed: Vec<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeliveryError + '_ {
    move |source| DeliveryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `bytes` atomically (temp file, fsync, rename,
/// fsync of the directory). The files are readable by their owner only:
/// a definition may hold a push signing secret.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DeliveryError> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Stores a new subscription.
pub(super) fn create(
    dir: &Path,
    spec: &SubscriptionConfig,
    committed: &[u64],
) -> Result<(), DeliveryError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_offsets(dir, committed)?;
    let definition = serde_json::to_vec_pretty(spec).map_err(|e| DeliveryError::Io {
        path: dir.join(DEFINITION),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&dir.join(DEFINITION), &definition)
}

/// Stores committed offsets.
pub(super) fn write_offsets(dir: &Path, committed: &[u64]) -> Result<(), DeliveryError> {
    let bytes = serde_json::to_vec(&StoredOffsets {
        committed: committed.to_vec(),
    })
    .unwrap_or_default();
    write_atomic(&dir.join(OFFSETS), &bytes)
}

const REDRIVEN: &str = "redriven.json";

/// The dead letters (dead-letter topic partition, offset) already
/// redriven.
pub(super) fn load_redriven(
    dir: &Path,
) -> Result<std::collections::BTreeSet<(u32, u64)>, DeliveryError> {
    let path = dir.join(REDRIVEN);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DeliveryError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Stores the set of redriven dead letters.
pub(super) fn save_redriven(
    dir: &Path,
    redriven: &std::collections::BTreeSet<(u32, u64)>,
) -> Result<(), DeliveryError> {
    // With shared definitions (Kafka), the directory holds only this file.
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_atomic(
        &dir.join(REDRIVEN),
        &serde_json::to_vec(redriven).unwrap_or_default(),
    )
}

/// Removes a subscription's files.
pub(super) fn remove(dir: &Path) -> Result<(), DeliveryError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir)(e)),
        _ => Ok(()),
    }
}

/// Loads every complete subscription under `root`.
pub(super) fn load_all(root: &Path) -> Result<Vec<(SubscriptionConfig, Vec<u64>)>, DeliveryError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io(root))? {
        let dir = entry.map_err(io(root))?.path();
        let definition_path = dir.join(DEFINITION);
        let Ok(definition) = std::fs::read(&definition_path) else {
            tracing::warn!(path = %dir.display(), "ignoring a subscription directory whose creation never completed");
            continue;
        };
        let corrupt = |path: &Path, e: serde_json::Error| DeliveryError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        };
        let spec: SubscriptionConfig =
            serde_json::from_slice(&definition).map_err(|e| corrupt(&definition_path, e))?;
        let offsets_path = dir.join(OFFSETS);
        let offsets = std::fs::read(&offsets_path).map_err(io(&offsets_path))?;
        let offsets: StoredOffsets =
            serde_json::from_slice(&offsets).map_err(|e| corrupt(&offsets_path, e))?;
        loaded.push((spec, offsets.committed));
    }
    Ok(loaded)
}
