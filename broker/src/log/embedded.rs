//! The embedded log: `<data dir>/topics/<topic>/topic.json` plus one
//! directory of segment files per partition.

use super::partition::{Partition, PartitionCheck, sync_dir};
use super::{EventLog, LogError, LogRecord, MAX_PARTITIONS, PartitionOffsets, TopicInfo};
use crate::config::StorageConfig;
use crate::model::TopicName;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::sync::Notify;

/// The metadata file that marks a topic directory as complete.
const TOPIC_FILE: &str = "topic.json";

#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    partitions: u32,
}

#[derive(Debug)]
struct Topic {
    info: TopicInfo,
    partitions: Vec<Partition>,
    appended: Arc<Notify>,
}

/// The default, file-based [`EventLog`].
#[derive(Debug)]
pub struct EmbeddedLog {
    root: PathBuf,
    config: StorageConfig,
    topics: RwLock<BTreeMap<TopicName, Arc<Topic>>>,
}

/// Prefix of a topic directory being deleted: renamed away (atomically)
/// before its files are removed; removed at the next open if a crash came
/// between.
const DELETED_PREFIX: &str = ".deleted-";

impl EmbeddedLog {
    /// Opens every topic under `data_dir/topics`, recovering each partition.
    pub fn open(data_dir: &Path, config: &StorageConfig) -> Result<EmbeddedLog, LogError> {
        let root = data_dir.join("topics");
        std::fs::create_dir_all(&root).map_err(|e| LogError::io(&root, e))?;
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&root).map_err(|e| LogError::io(&root, e))? {
            let entry = entry.map_err(|e| LogError::io(&root, e))?;
            let dir = entry.path();
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(DELETED_PREFIX)
            {
                // A deletion interrupted after its rename: finish it.
                std::fs::remove_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
                tracing::info!(path = %dir.display(), "finished an interrupted topic deletion");
                continue;
            }
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| TopicName::new(n).ok())
            else {
                tracing::warn!(path = %dir.display(), "ignoring a directory that is not a topic");
                continue;
            };
            let meta_path = dir.join(TOPIC_FILE);
            let Ok(meta) = std::fs::read(&meta_path) else {
                tracing::warn!(path = %dir.display(), "ignoring a topic directory whose creation never completed");
                continue;
            };
            let meta: TopicMeta = serde_json::from_slice(&meta).map_err(|e| LogError::Corrupt {
                path: meta_path.clone(),
                position: 0,
                reason: e.to_string(),
            })?;
            let topic = open_topic(&dir, name.clone(), meta.partitions, &config.clone())?;
            topics.insert(name, Arc::new(topic));
        }
        tracing::info!(topics = topics.len(), dir = %root.display(), "embedded log opened");
        Ok(EmbeddedLog {
            root,
            config: config.clone(),
            topics: RwLock::new(topics),
        })
    }

    fn get(&self, name: &TopicName) -> Result<Arc<Topic>, LogError> {
        self.topics
            .read()
            .map_err(|_| LogError::Closed)?
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))
    }

    fn with_partition<T>(
        &self,
        name: &TopicName,
        partition: u32,
        f: impl FnOnce(&Partition) -> T,
    ) -> Result<T, LogError> {
        let topic = self.get(name)?;
        let p =
            topic
                .partitions
                .get(partition as usize)
                .ok_or_else(|| LogError::NoSuchPartition {
                    topic: name.to_string(),
                    partition,
                    partitions: topic.info.partitions,
                })?;
        Ok(f(p))
    }
}

/// Checks every record of every segment under `data_dir/topics` without
/// changing anything; returns what each partition holds, or the first
/// corruption found (naming the file and byte position).
pub fn verify(data_dir: &Path) -> Result<Vec<(TopicName, u32, PartitionCheck)>, LogError> {
    let root = data_dir.join("topics");
    let mut names: Vec<TopicName> = std::fs::read_dir(&root)
        .map_err(|e| LogError::io(&root, e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join(TOPIC_FILE).exists())
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|n| TopicName::new(n).ok())
        })
        .collect();
    names.sort();
    let mut report = Vec::new();
    for name in names {
        let dir = root.join(name.as_str());
        let meta_path = dir.join(TOPIC_FILE);
        let meta = std::fs::read(&meta_path).map_err(|e| LogError::io(&meta_path, e))?;
        let meta: TopicMeta = serde_json::from_slice(&meta).map_err(|e| LogError::Corrupt {
            path: meta_path.clone(),
            position: 0,
            reason: e.to_string(),
        })?;
        for partition in 0..meta.partitions {
            let check = super::partition::verify(&dir.join(partition.to_string()))?;
            report.push((name.clone(), partition, check));
        }
    }
    Ok(report)
}

fn open_topic(
    dir: &Path,
    name: TopicName,
    partitions: u32,
    config: &StorageConfig,
) -> Result<Topic, LogError> {
    let appended = Arc::new(Notify::new());
    let partitions = (0..partitions)
        .map(|p| Partition::open(&dir.join(p.to_string()), config, Arc::clone(&appended)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Topic {
        info: TopicInfo {
            name,
            partitions: partitions.len() as u32,
        },
        partitions,
        appended,
    })
}

impl EventLog for EmbeddedLog {
    fn create_topic(&self, name: &TopicName, partitions: u32) -> Result<TopicInfo, LogError> {
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(LogError::InvalidPartitions {
                requested: partitions,
                max: MAX_PARTITIONS,
            });
        }
        let mut topics = self.topics.write().map_err(|_| LogError::Closed)?;
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let dir = self.root.join(name.as_str());
        if dir.exists() {
            // Left over from a creation that never completed (no topic.json).
            std::fs::remove_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let topic = open_topic(&dir, name.clone(), partitions, &self.config)?;
        let meta = serde_json::to_vec(&TopicMeta { partitions }).unwrap_or_default();
        let tmp = dir.join("topic.json.tmp");
        std::fs::write(&tmp, &meta)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, dir.join(TOPIC_FILE)))
            .map_err(|e| LogError::io(&tmp, e))?;
        sync_dir(&dir)?;
        sync_dir(&self.root)?;
        let info = topic.info.clone();
        topics.insert(name.clone(), Arc::new(topic));
        tracing::info!(topic = %name, partitions, "topic created");
        Ok(info)
    }

    fn delete_topic(&self, name: &TopicName) -> Result<(), LogError> {
        let topic = self
            .topics
            .write()
            .map_err(|_| LogError::Closed)?
            .remove(name)
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))?;
        for partition in &topic.partitions {
            partition.close();
        }
        let dir = self.root.join(name.as_str());
        // The rename is the deletion's commit point; the doomed name is
        // short whatever the topic's, so it cannot fail for length.
        let doomed = self
            .root
            .join(format!("{DELETED_PREFIX}{}", uuid::Uuid::new_v4()));
        std::fs::rename(&dir, &doomed).map_err(|e| LogError::io(&dir, e))?;
        sync_dir(&self.root)?;
        std::fs::remove_dir_all(&doomed).map_err(|e| LogError::io(&doomed, e))?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
    }

    fn topics(&self) -> Vec<TopicInfo> {
        self.topics
            .read()
            .map(|t| t.values().map(|topic| topic.info.clone()).collect())
            .unwrap_or_default()
    }

    fn topic(&self, name: &TopicName) -> Result<TopicInfo, LogError> {
        Ok(self.get(name)?.info.clone())
    }

    fn append(
        &self,
        topic: &TopicName,
        partition: u32,
        payloads: Vec<Bytes>,
    ) -> BoxFuture<'static, Result<Vec<u64>, LogError>> {
        let count = payloads.len() as u64;
        match self.with_partition(topic, partition, |p| p.append(payloads)) {
            Ok(receiver) => receiver
                .map(move |reply| {
                    let base = reply.unwrap_or(Err(LogError::Closed))?;
                    Ok((base..base + count).collect())
                })
                .boxed(),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }

    fn read(
        &self,
        topic: &TopicName,
        partition: u32,
        from: u64,
        max_records: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.with_partition(topic, partition, |p| p.read(from, max_records))?
    }

    fn offset_for_time(
        &self,
        topic: &TopicName,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64, LogError> {
        self.with_partition(topic, partition, |p| p.offset_for_time(timestamp_ms))?
    }

    fn offsets(&self, topic: &TopicName, partition: u32) -> Result<PartitionOffsets, LogError> {
        self.with_partition(topic, partition, Partition::offsets)
    }

    fn truncate_before(
        &self,
        topic: &TopicName,
        partition: u32,
        offset: u64,
    ) -> Result<u64, LogError> {
        self.with_partition(topic, partition, |p| p.truncate_before(offset))?
    }

    fn appended(&self, topic: &TopicName) -> Result<Arc<Notify>, LogError> {
        Ok(Arc::clone(&self.get(topic)?.appended))
    }

    fn close(&self) {
        if let Ok(topics) = self.topics.read() {
            for topic in topics.values() {
                for partition in &topic.partitions {
                    partition.close();
                }
            }
        }
    }
}
