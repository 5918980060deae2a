//! The single mapping from each layer's errors to `tonic::Status`. Every
//! match is exhaustive, so a new error variant forces a choice of code.

use crate::delivery::DeliveryError;
use crate::ingest::{IngestError, Rejection};
use crate::log::LogError;
use crate::model::NameError;
use crate::schedule::ScheduleError;
use crate::schema::SchemaError;
use tonic::{Code, Status};

impl From<ScheduleError> for Status {
    fn from(error: ScheduleError) -> Status {
        match error {
            ScheduleError::NotFound { .. } => Status::not_found(error.to_string()),
            ScheduleError::Log(e) => e.into(),
            ScheduleError::Name(e) => Status::internal(e.to_string()),
        }
    }
}

/// A status for a failure inside the broker whose message names server
/// files: the caller gets `public`, the broker's log the whole error.
fn internal_failure(code: Code, error: &dyn std::fmt::Display, public: &str) -> Status {
    tracing::error!(%error, "a call failed inside the broker");
    Status::new(code, public)
}

/// What callers are told of a storage failure (the path stays in the log).
const STORAGE_FAILED: &str = "the broker's storage failed; the broker's log has the details";

impl From<LogError> for Status {
    fn from(error: LogError) -> Status {
        let code = match &error {
            LogError::TopicNotFound(_) => Code::NotFound,
            LogError::TopicExists(_) => Code::AlreadyExists,
            LogError::NoSuchPartition { .. } | LogError::InvalidPartitions { .. } => {
                Code::InvalidArgument
            }
            LogError::Corrupt { .. } => {
                return internal_failure(
                    Code::DataLoss,
                    &error,
                    "a stored record is corrupt: the broker's log names the segment file and position; `switchyard log verify` checks the whole log",
                );
            }
            LogError::Io { .. } => {
                return internal_failure(Code::Unavailable, &error, STORAGE_FAILED);
            }
            LogError::Failed(_) | LogError::Closed | LogError::Kafka { .. } => Code::Unavailable,
        };
        Status::new(code, error.to_string())
    }
}

impl From<NameError> for Status {
    fn from(error: NameError) -> Status {
        Status::invalid_argument(error.to_string())
    }
}

impl From<DeliveryError> for Status {
    fn from(error: DeliveryError) -> Status {
        let code = match &error {
            DeliveryError::SubscriptionNotFound(_) | DeliveryError::TopicNotFound(_) => {
                Code::NotFound
            }
            DeliveryError::SubscriptionExists(_) => Code::AlreadyExists,
            DeliveryError::InvalidSpec { .. } | DeliveryError::Name(_) => Code::InvalidArgument,
            DeliveryError::Log(_) | DeliveryError::Io { .. } => Code::Unavailable,
            DeliveryError::Undecodable { .. } => Code::DataLoss,
            DeliveryError::OwnedElsewhere { .. } => Code::FailedPrecondition,
        };
        match error {
            DeliveryError::Log(log) => log.into(),
            io @ DeliveryError::Io { .. } => internal_failure(code, &io, STORAGE_FAILED),
            other => Status::new(code, other.to_string()),
        }
    }
}

impl From<IngestError> for Status {
    fn from(error: IngestError) -> Status {
        let code = match &error {
            IngestError::BusNotFound(_) => Code::NotFound,
            IngestError::BatchTooLarge { .. } => Code::InvalidArgument,
        };
        Status::new(code, error.to_string())
    }
}

impl From<SchemaError> for Status {
    fn from(error: SchemaError) -> Status {
        let code = match &error {
            SchemaError::Compile(_) | SchemaError::InvalidName(_) => Code::InvalidArgument,
            SchemaError::Io { .. } => {
                return internal_failure(Code::Unavailable, &error, STORAGE_FAILED);
            }
        };
        Status::new(code, error.to_string())
    }
}

/// The gRPC code of a per-event rejection.
pub(super) fn rejection_code(rejection: &Rejection) -> Code {
    match rejection {
        Rejection::Invalid(_) => Code::InvalidArgument,
        Rejection::Unroutable(_) => Code::FailedPrecondition,
        Rejection::Storage(_) => Code::Unavailable,
        Rejection::Exhausted(_) => Code::ResourceExhausted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_tell_callers_no_server_paths() {
        let secret =
            std::path::PathBuf::from("/srv/secret-data/topics/orders/0/00000000000000000000.log");
        let failures: Vec<Status> = vec![
            LogError::io(&secret, std::io::Error::other("disk full")).into(),
            LogError::Corrupt {
                path: secret.clone(),
                position: 42,
                reason: "bad checksum".into(),
            }
            .into(),
            DeliveryError::Io {
                path: secret.clone(),
                source: std::io::Error::other("read-only"),
            }
            .into(),
            DeliveryError::Log(LogError::io(&secret, std::io::Error::other("gone"))).into(),
            SchemaError::Io {
                path: secret.clone(),
                source: std::io::Error::other("denied"),
            }
            .into(),
        ];
        for status in failures {
            assert!(!status.message().contains("secret"), "{status:?}");
            assert!(status.message().contains("broker's log"), "{status:?}");
        }
        let corrupt: Status = LogError::Corrupt {
            path: secret,
            position: 1,
            reason: "x".into(),
        }
        .into();
        assert_eq!(corrupt.code(), Code::DataLoss);
    }
}
