//! Subscription definitions shared by the broker nodes of a cluster (logs
//! with consumer groups): the internal topic `__subscriptions`, one
//! partition, one record per creation (the definition) or deletion (no
//! definition). Every node reads it in order; the last record of a name
//! wins.

use super::DeliveryError;
use crate::config::SubscriptionConfig;
use crate::log::{EventLog, LogError, blocking, scan};
use crate::model::TopicName;
use serde::{Deserialize, Serialize};

/// The catalog topic.
const TOPIC: &str = "__subscriptions";

/// Catalog records as read: subscription name, definition (`None`:
/// deleted).
type Entries = Vec<(String, Option<SubscriptionConfig>)>;

/// One catalog record.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    name: String,
    /// `None`: the subscription was deleted.
    definition: Option<SubscriptionConfig>,
}

fn topic() -> TopicName {
    TopicName::new(TOPIC).unwrap_or_else(|_| unreachable!("the catalog topic name is valid"))
}

/// Creates the catalog topic when missing.
pub(super) fn ensure(log: &dyn EventLog) -> Result<(), DeliveryError> {
    match log.topic(&topic()) {
        Ok(_) => Ok(()),
        Err(LogError::TopicNotFound(_)) => {
            log.create_topic(&topic(), 1)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Records a subscription's definition (`None`: its deletion); returns
/// once the log has it.
pub(super) fn write(
    log: &dyn EventLog,
    name: &str,
    definition: Option<&SubscriptionConfig>,
) -> Result<(), DeliveryError> {
    let entry = serde_json::json!({ "name": name, "definition": definition });
    let appended = log.append(&topic(), 0, vec![entry.to_string().into()]);
    blocking(|| futures::executor::block_on(appended))?;
    Ok(())
}

/// The records from offset `from` on, as (name, definition), and the
/// offset to read from next time. A record that cannot be decoded is
/// logged and skipped: it names nothing this version understands.
pub(super) fn read(log: &dyn EventLog, from: u64) -> Result<(Entries, u64), DeliveryError> {
    let mut entries = Vec::new();
    let mut next = from;
    scan(log, &topic(), 0, from, |record| {
        next = record.offset + 1;
        match serde_json::from_slice::<Entry>(&record.payload) {
            Ok(entry) => entries.push((entry.name, entry.definition)),
            Err(error) => {
                tracing::warn!(offset = record.offset, %error, "skipping an unreadable subscription catalog record");
            }
        }
        std::ops::ControlFlow::Continue(())
    })?;
    Ok((entries, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use crate::log::EmbeddedLog;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_last_record_of_a_name_is_read_after_the_earlier_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = EmbeddedLog::open(dir.path(), &StorageConfig::default()).expect("log");
        ensure(&log).expect("catalog topic");
        ensure(&log).expect("ensuring twice is fine");
        let spec: SubscriptionConfig =
            serde_yaml_ng::from_str("{name: billing, topic: orders}").expect("spec");
        write(&log, "billing", Some(&spec)).expect("write");
        write(&log, "billing", None).expect("delete");
        let (entries, next) = read(&log, 0).expect("read");
        assert_eq!(
            entries,
            vec![
                ("billing".to_string(), Some(spec)),
                ("billing".to_string(), None)
            ]
        );
        assert_eq!(next, 2);
        let (later, again) = read(&log, next).expect("read on");
        assert!(later.is_empty());
        assert_eq!(again, 2);
    }
}
