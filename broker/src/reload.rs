//! Hot reload of the rule files: on SIGHUP and when a file changes, parse
//! and compile the new set off the hot path, create topics it targets, and
//! swap it in atomically. On any error the old set stays in force; the
//! error is logged and shown by Admin `ListRules` (`switchyard rules list`).

use crate::audit::{AuditEntry, AuditLog, Outcome};
use crate::ingest::Ingest;
use crate::log::{EventLog, LogError};
use crate::model::TopicName;
use crate::rules::{RuleSet, RulesError};
use crate::telemetry::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new rules are invalid.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// A topic the new rules target could not be created.
    #[error("creating a topic the new rules target: {0}")]
    Log(#[from] LogError),
}

/// Creates the topics in `topics` that do not exist yet, with their own
/// partition count or `default_partitions`.
pub fn ensure_topics(
    log: &dyn EventLog,
    topics: impl IntoIterator<Item = (TopicName, Option<u32>)>,
    default_partitions: u32,
) -> Result<(), LogError> {
    for (topic, partitions) in topics {
        match log.topic(&topic) {
            Ok(existing) => {
                if partitions.is_some_and(|p| p != existing.partitions) {
                    tracing::warn!(%topic, existing = existing.partitions, "topic exists with another partition count; keeping it");
                }
            }
            Err(LogError::TopicNotFound(_)) => {
                log.create_topic(&topic, partitions.unwrap_or(default_partitions))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reloads the rule files into an [`Ingest`].
#[derive(Debug, Clone)]
pub struct RuleReloader {
    files: Vec<PathBuf>,
    buses: Vec<String>,
    ingest: Arc<Ingest>,
    log: Arc<dyn EventLog>,
    default_partitions: u32,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
}

/// What identifies a file version without reading it.
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

impl RuleReloader {
    /// A reloader of `files` (plus the config's `buses`); each reload is
    /// an audited change by the principal `rule-files`.
    pub fn new(
        files: Vec<PathBuf>,
        buses: Vec<String>,
        ingest: Arc<Ingest>,
        log: Arc<dyn EventLog>,
        default_partitions: u32,
        metrics: Arc<Metrics>,
        audit: Arc<AuditLog>,
    ) -> Self {
        Self {
            files,
            buses,
            ingest,
            log,
            default_partitions,
            metrics,
            audit,
        }
    }

    fn audit(&self, outcome: Outcome, detail: &str) {
        self.audit.record(&AuditEntry {
            remote: None,
            principal: "rule-files",
            operation: "ReloadRules",
            action: "manage",
            resource: "rules",
            outcome,
            detail,
        });
    }

    /// Loads, compiles and swaps in the rule files now; returns the number
    /// of rules. On error nothing changes except the recorded status.
    pub fn reload(&self) -> Result<usize, ReloadError> {
        let outcome = RuleSet::load(&self.files, &self.buses)
            .map_err(ReloadError::from)
            .and_then(|set| {
                ensure_topics(
                    self.log.as_ref(),
                    set.target_topics().into_iter().map(|t| (t, None)),
                    self.default_partitions,
                )?;
                Ok(set)
            });
        match outcome {
            Ok(set) => {
                let count = set.rules().len();
                let version = self.ingest.replace_rules(set);
                self.metrics
                    .rules_version
                    .set(i64::try_from(version).unwrap_or(i64::MAX));
                self.metrics.rules_last_reload_ok.set(1);
                tracing::info!(rules = count, version, "rules reloaded");
                self.audit(Outcome::Done, &format!("version {version}, {count} rules"));
                Ok(count)
            }
            Err(error) => {
                tracing::error!(%error, "rules reload failed; the previous rules stay in force");
                self.ingest.record_reload_error(error.to_string());
                self.metrics.rules_last_reload_ok.set(0);
                self.metrics.rules_reload_failures.inc();
                self.audit(Outcome::Failed, &error.to_string());
                Err(error)
            }
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        self.files
            .iter()
            .map(|f| {
                std::fs::metadata(f)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    /// Reloads on SIGHUP, and when a file's modification time or size
    /// changed and then stayed the same for one more check (so a file
    /// caught half-written is not loaded); checked every `poll`, zero
    /// disables the check. Runs until `shutdown`.
    pub async fn run(self, poll: Duration, shutdown: CancellationToken) {
        let mut hangup = hangup_signal();
        let mut seen = self.fingerprint();
        let mut changing: Option<Fingerprint> = None;
        let mut tick = tokio::time::interval(if poll.is_zero() {
            Duration::from_secs(3600)
        } else {
            poll
        });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            let forced = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = hup => true,
                _ = tick.tick() => false,
            };
            let now = self.fingerprint();
            if !forced {
                // Polling: a change is loaded once it stops changing.
                let settled = !poll.is_zero() && now != seen && changing.as_ref() == Some(&now);
                if !settled {
                    changing = (now != seen).then_some(now);
                    continue;
                }
            }
            changing = None;
            seen = now;
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }
}

/// SIGHUP notifications (`None` where there are none).
#[cfg(unix)]
pub(crate) fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
pub(crate) fn hangup_signal() -> Option<futures::future::Pending<Option<()>>> {
    None
}
