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
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    /// Who called.
    pub principal: &'a str,
    /// The gRPC method, e.g. `CreateTopic`, or `ReloadRules`.
    pub operation: &'a str,
    /// The ACL action checked, e.g. `manage`.
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
                principal = entry.principal, operation = entry.operation,
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
}
