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

impl From<LogError> for Status {
    fn from(error: LogError) -> Status {
        let code = match &error {
            LogError::TopicNotFound(_) => Code::NotFound,
            LogError::TopicExists(_) => Code::AlreadyExists,
            LogError::NoSuchPartition { .. } | LogError::InvalidPartitions { .. } => {
                Code::InvalidArgument
            }
            LogError::Corrupt { .. } => Code::DataLoss,
            LogError::Io { .. }
            | LogError::Failed(_)
            | LogError::Closed
            | LogError::Kafka { .. } => Code::Unavailable,
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
        Status::new(code, error.to_string())
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
            SchemaError::Io { .. } => Code::Unavailable,
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
