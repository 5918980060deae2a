//! The SDK's error type: stable and independent of the broker's internals.

/// What went wrong in an SDK call.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The broker URL is invalid or the connection failed.
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The broker answered with an error status.
    #[error("broker error {code:?}: {message}", code = .0.code(), message = .0.message())]
    Status(tonic::Status),
    /// The broker refused one event of a publish.
    #[error("event '{id}' rejected ({code:?}): {message}")]
    Rejected {
        /// The event id.
        id: String,
        /// The gRPC code of the rejection.
        code: tonic::Code,
        /// The offending field, if one.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An event's data could not be encoded or decoded.
    #[error("event data: {0}")]
    Data(String),
    /// The subscription stream ended unexpectedly.
    #[error("subscription stream ended: {0}")]
    StreamEnded(String),
}

impl From<tonic::Status> for SdkError {
    fn from(status: tonic::Status) -> Self {
        SdkError::Status(status)
    }
}
