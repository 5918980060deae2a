//! The audit log: one JSON line per denied call and per administrative
//! change (allowed or failed), appended to a file that survives restarts
//! (`audit_log`, default `DATA_DIR/audit.log`) and echoed to the log under
//! the `switchyard::audit` target. When the file passes
//! [`ROTATE_BYTES`] it moves to `audit.log.1` (one old file is kept), so
//! it cannot fill the disk.

use crate::config::format_rfc3339_ms;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Size at which the audit file is rotated by default.
pub const ROTATE_BYTES: u64 = 64 * 1024 * 1024;

/// How a recorded call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The change was made.
    Done,
    /// The caller was allowed but the change failed.
    Failed,
    /// The caller was not allowed.
    Denied,
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry<'a> {
    /// Who called (`unknown` when authentication failed).
    pub principal: &'a str,
    /// The caller's address, where the record is about a connection
    /// (failed authentication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<&'a str>,
    /// The gRPC method, e.g. `CreateTopic`, or `ReloadRules`.
    pub operation: &'a str,
    /// What was done: the ACL action checked, e.g. `manage`, or a finer
    /// verb (`seek`, checked as `redrive`; `authenticate`).
    pub action: &'a str,
    /// What it was about, e.g. `topic/orders`.
    pub resource: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was denied or failed; empty when done.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub detail: &'a str,
}

/// The append-only audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    rotate_bytes: u64,
    file: Mutex<Option<(File, u64)>>,
}

impl AuditLog {
    /// Opens (creating) the file at `path`, owner-readable only; it is
    /// rotated when it reaches `rotate_bytes`.
    pub fn open(path: &Path, rotate_bytes: u64) -> std::io::Result<AuditLog> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(AuditLog {
            path: path.to_path_buf(),
            rotate_bytes,
            file: Mutex::new(Some((file, size))),
        })
    }

    /// Where records go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` (one `write` of one line, so a crash never leaves
    /// half a record behind a complete one) and echoes it to the log. A
    /// write failure is logged, never returned: auditing must not turn a
    /// change that happened into an error.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        #[derive(Serialize)]
        struct Line<'a> {
            time: String,
            #[serde(flatten)]
            entry: &'a AuditEntry<'a>,
        }
        let line = Line {
            time: format_rfc3339_ms(crate::model::now_unix_ms()),
            entry,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        match entry.outcome {
            Outcome::Denied => tracing::warn!(
                target: "switchyard::audit",
                principal = entry.principal, remote = entry.remote, operation = entry.operation,
                action = entry.action, resource = entry.resource, detail = entry.detail,
                "denied"
            ),
            Outcome::Done | Outcome::Failed => tracing::info!(
                target: "switchyard::audit",
                principal = entry.principal, operation = entry.operation,
                resource = entry.resource, outcome = ?entry.outcome, detail = entry.detail,
                "admin change"
            ),
        }
        if let Err(error) = self.append(text.as_bytes()) {
            tracing::error!(%error, path = %self.path.display(), "cannot write the audit log");
        }
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard
            .as_ref()
            .is_none_or(|(_, size)| *size >= self.rotate_bytes)
        {
            *guard = None;
            if self.path.exists() {
                std::fs::rename(&self.path, self.path.with_extension("log.1"))?;
            }
            *guard = Some((open_append(&self.path)?, 0));
        }
        let Some((file, size)) = guard.as_mut() else {
            return Ok(());
        };
        file.write_all(line)?;
        *size += line.len() as u64;
        Ok(())
    }
}

/// Most failed authentications written to the audit log per second; the
/// rest are counted (`switchyard_auth_failures_total`) and summed up in the
/// next record written, so a flood cannot fill the disk.
pub const AUTH_FAILURE_RECORDS_PER_SECOND: u32 = 10;

/// Failed authentications (no token, a wrong or expired one, a refused
/// client certificate): counted by reason, and audited with the remote
/// address, at most [`AUTH_FAILURE_RECORDS_PER_SECOND`] a second.
pub struct AuthFailures {
    audit: Arc<AuditLog>,
    count: Box<dyn Fn(&str) + Send + Sync>,
    window: Mutex<FailureWindow>,
}

impl std::fmt::Debug for AuthFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFailures").finish_non_exhaustive()
    }
}

/// The rate limit's state.
#[derive(Debug)]
struct FailureWindow {
    started: Instant,
    written: u32,
    suppressed: u64,
}

impl AuthFailures {
    /// Records into `audit`; `count` is called with each failure's reason
    /// (the metric).
    pub fn new(audit: Arc<AuditLog>, count: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            audit,
            count: Box::new(count),
            window: Mutex::new(FailureWindow {
                started: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// One failed authentication from `remote` (if known); `principal` is
    /// the one the credentials named, if any (an expired token's).
    pub fn record(
        &self,
        remote: Option<SocketAddr>,
        principal: Option<&str>,
        reason: &'static str,
        detail: &str,
    ) {
        (self.count)(reason);
        let suppressed = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            if window.started.elapsed() >= Duration::from_secs(1) {
                window.started = Instant::now();
                window.written = 0;
            }
            if window.written >= AUTH_FAILURE_RECORDS_PER_SECOND {
                window.suppressed += 1;
                return;
            }
            window.written += 1;
            std::mem::take(&mut window.suppressed)
        };
        let detail = if suppressed > 0 {
            format!("{reason}: {detail} ({suppressed} earlier failures not recorded: rate limit)")
        } else {
            format!("{reason}: {detail}")
        };
        let remote = remote.map(|r| r.to_string());
        self.audit.record(&AuditEntry {
            principal: principal.unwrap_or("unknown"),
            remote: Some(remote.as_deref().unwrap_or("unknown")),
            operation: "Authenticate",
            action: "authenticate",
            resource: "",
            outcome: Outcome::Denied,
            detail: &detail,
        });
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_that_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let entry = AuditEntry {
            remote: None,
            principal: "ops",
            operation: "CreateTopic",
            action: "manage",
            resource: "topic/orders",
            outcome: Outcome::Done,
            detail: "",
        };
        AuditLog::open(&path, ROTATE_BYTES)
            .expect("open")
            .record(&entry);
        AuditLog::open(&path, ROTATE_BYTES)
            .expect("reopen")
            .record(&AuditEntry {
                outcome: Outcome::Denied,
                detail: "no grant",
                ..entry
            });
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["outcome"], "done");
        assert!(lines[0].get("detail").is_none());
        assert_eq!(lines[1]["outcome"], "denied");
        assert_eq!(lines[1]["detail"], "no grant");
        assert_eq!(lines[1]["resource"], "topic/orders");
        assert!(lines[1]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn a_full_file_moves_aside_and_one_old_file_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let audit = AuditLog::open(&path, 300).expect("open");
        for n in 0..20 {
            audit.record(&AuditEntry {
                remote: None,
                principal: "ops",
                operation: "DeleteTopic",
                action: "manage",
                resource: &format!("topic/t{n}"),
                outcome: Outcome::Done,
                detail: "",
            });
        }
        let current = std::fs::metadata(&path).expect("current").len();
        let old = std::fs::metadata(dir.path().join("audit.log.1"))
            .expect("old")
            .len();
        assert!(current <= 300 + 200 && old <= 300 + 200, "{current} {old}");
        let last = std::fs::read_to_string(&path).expect("read");
        assert!(
            last.contains("topic/t19"),
            "the newest record is in the current file"
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);
    }

    #[test]
    fn a_flood_of_failed_authentications_is_counted_whole_and_recorded_at_a_bounded_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let audit = Arc::new(AuditLog::open(&path, ROTATE_BYTES).expect("open"));
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tally = Arc::clone(&counted);
        let failures = AuthFailures::new(audit, move |_| {
            tally.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let remote: SocketAddr = "192.0.2.7:4711".parse().expect("addr");
        for _ in 0..1000 {
            failures.record(Some(remote), None, "unknown token", "no such token");
        }
        assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), 1000);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert!(
            (1..=2 * AUTH_FAILURE_RECORDS_PER_SECOND as usize).contains(&lines.len()),
            "{} lines",
            lines.len()
        );
        assert_eq!(lines[0]["principal"], "unknown");
        assert_eq!(lines[0]["remote"], "192.0.2.7:4711");
        assert_eq!(lines[0]["operation"], "Authenticate");
        assert_eq!(lines[0]["outcome"], "denied");
        assert!(
            lines[0]["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("unknown token")),
            "{}",
            lines[0]
        );
    }
}
