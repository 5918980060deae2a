//! The Admin API as JSON over HTTP, for the console (and for curl):
//! `POST /api/v1/admin/{Method}` with the request message as JSON (the
//! proto3 JSON mapping; field names as in `admin.proto`) answers the reply
//! message as JSON. Each call goes through the very gRPC service the broker
//! serves — in process, carrying the caller's `Authorization` header — so
//! authentication, ACLs, the audit log and message limits are the same as
//! over gRPC by construction, and no method needs code of its own here.

use super::AdminService;
use super::auth::Authenticator;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use switchyard_proto::v1::admin_server::AdminServer;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::service::interceptor::InterceptedService;

/// The Admin gRPC service as the broker serves it: behind authentication.
pub type AdminGrpc = InterceptedService<AdminServer<AdminService>, Authenticator>;

/// The gRPC service name of the Admin API.
const ADMIN: &str = "switchyard.v1.Admin";

/// Why a JSON call failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The path names no Admin method.
    #[error(
        "the Admin API has no method {0:?}; the methods are those of service Admin in proto/switchyard/v1/admin.proto, e.g. ListTopics"
    )]
    UnknownMethod(String),
    /// The body is not the method's request message in JSON.
    #[error("the body is not a {message} in JSON: {reason}")]
    BadRequest {
        /// The expected message.
        message: String,
        /// What is wrong.
        reason: String,
    },
    /// The Admin service answered with an error.
    #[error("{}", .0.message())]
    Status(tonic::Status),
    /// The service's reply could not be read (a broker bug).
    #[error("the reply could not be read: {0}")]
    BadReply(String),
}

impl GatewayError {
    /// The HTTP status that says the same as this error.
    pub fn http_status(&self) -> u16 {
        use tonic::Code;
        match self {
            GatewayError::UnknownMethod(_) => 404,
            GatewayError::BadRequest { .. } => 400,
            GatewayError::BadReply(_) => 500,
            GatewayError::Status(status) => match status.code() {
                Code::InvalidArgument | Code::OutOfRange => 400,
                Code::Unauthenticated => 401,
                Code::PermissionDenied => 403,
                Code::NotFound => 404,
                Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => 409,
                Code::ResourceExhausted => 429,
                Code::Unavailable => 503,
                Code::DeadlineExceeded => 504,
                Code::Unimplemented => 501,
                _ => 500,
            },
        }
    }

    /// A stable lower-case name of the error, e.g. `permission_denied`.
    pub fn code(&self) -> String {
        match self {
            GatewayError::UnknownMethod(_) => "unknown_method".into(),
            GatewayError::BadRequest { .. } => "bad_request".into(),
            GatewayError::BadReply(_) => "internal".into(),
            GatewayError::Status(status) => format!("{:?}", status.code())
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let gap = (i > 0 && c.is_ascii_uppercase()).then_some('_');
                    gap.into_iter().chain(c.to_lowercase())
                })
                .collect(),
        }
    }
}

/// JSON in, JSON out, over the in-process Admin service.
#[derive(Clone)]
pub struct AdminGateway {
    pool: DescriptorPool,
    admin: AdminGrpc,
}

impl std::fmt::Debug for AdminGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGateway").finish_non_exhaustive()
    }
}

impl AdminGateway {
    /// Over `admin`, the same service value the gRPC server serves.
    pub fn new(admin: AdminGrpc) -> Result<AdminGateway, prost_reflect::DescriptorError> {
        let pool = DescriptorPool::decode(switchyard_proto::FILE_DESCRIPTOR_SET)?;
        Ok(AdminGateway { pool, admin })
    }

    /// Calls Admin method `method` with the JSON request `body`, as the
    /// holder of `authorization` (an `Authorization` header value, if any).
    pub async fn call(
        &self,
        method: &str,
        authorization: Option<&http::HeaderValue>,
        body: &[u8],
    ) -> Result<serde_json::Value, GatewayError> {
        let descriptor = self
            .pool
            .get_service_by_name(ADMIN)
            .and_then(|service| service.methods().find(|m| m.name() == method))
            .ok_or_else(|| GatewayError::UnknownMethod(method.to_string()))?;
        let request = decode_json(descriptor.input(), body)?;
        let mut builder = http::Request::post(format!("/{ADMIN}/{method}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers");
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let request = builder
            .body(tonic::body::Body::new(Full::new(frame(&request))))
            .map_err(|e| GatewayError::BadRequest {
                message: descriptor.input().full_name().to_string(),
                reason: e.to_string(),
            })?;
        let mut admin = self.admin.clone();
        std::future::poll_fn(|cx| {
            Service::<http::Request<tonic::body::Body>>::poll_ready(&mut admin, cx)
        })
        .await
        .map_err(|e| GatewayError::BadReply(e.to_string()))?;
        let response = admin
            .call(request)
            .await
            .map_err(|e| GatewayError::BadReply(e.to_string()))?;
        // An error comes in the headers (trailers-only) or the trailers.
        if let Some(status) = tonic::Status::from_header_map(response.headers())
            && status.code() != tonic::Code::Ok
        {
            return Err(GatewayError::Status(status));
        }
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| GatewayError::BadReply(e.to_string()))?;
        if let Some(status) = collected
            .trailers()
            .and_then(tonic::Status::from_header_map)
            && status.code() != tonic::Code::Ok
        {
            return Err(GatewayError::Status(status));
        }
        let reply = unframe(collected.to_bytes()).ok_or_else(|| {
            GatewayError::BadReply("no complete gRPC message in the reply".into())
        })?;
        let reply = DynamicMessage::decode(descriptor.output(), reply)
            .map_err(|e| GatewayError::BadReply(e.to_string()))?;
        // Every field (defaults too, so the console need not guess), 64-bit
        // numbers as JSON numbers, names as in the .proto.
        let options = SerializeOptions::new()
            .skip_default_fields(false)
            .stringify_64_bit_integers(false)
            .use_proto_field_name(true);
        reply
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| GatewayError::BadReply(e.to_string()))
    }
}

/// The request message `message` from its JSON body, encoded as protobuf
/// (an empty body is the empty message). Public for the fuzz target that
/// feeds it network input.
pub fn decode_json(message: MessageDescriptor, body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let bad = |reason: String| GatewayError::BadRequest {
        message: message.full_name().to_string(),
        reason,
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let mut json = serde_json::Deserializer::from_slice(body);
    let request =
        DynamicMessage::deserialize(message.clone(), &mut json).map_err(|e| bad(e.to_string()))?;
    json.end().map_err(|e| bad(e.to_string()))?;
    Ok(prost::Message::encode_to_vec(&request))
}

/// A gRPC length-prefixed message: uncompressed flag, length, bytes.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// The first message of a gRPC body; `None` when it is cut short.
fn unframe(mut body: Bytes) -> Option<Bytes> {
    if body.len() < 5 {
        return None;
    }
    let _compressed = body.get_u8();
    let length = body.get_u32() as usize;
    (body.len() >= length).then(|| body.split_to(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        assert_eq!(unframe(frame(b"hello")).as_deref(), Some(&b"hello"[..]));
        assert_eq!(unframe(frame(b"")).as_deref(), Some(&b""[..]));
        assert_eq!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])), None);
    }

    #[test]
    fn json_requests_decode_by_the_proto_and_name_what_is_wrong() {
        let pool = DescriptorPool::decode(switchyard_proto::FILE_DESCRIPTOR_SET).expect("pool");
        let message = |name: &str| pool.get_message_by_name(name).expect("message");
        let bytes = decode_json(
            message("switchyard.v1.RedriveDeadLettersRequest"),
            br#"{"subscription": "billing", "only": [{"partition": 0, "offset": "7"}]}"#,
        )
        .expect("decodes");
        let request: switchyard_proto::v1::RedriveDeadLettersRequest =
            prost::Message::decode(bytes.as_slice()).expect("proto");
        assert_eq!(request.subscription, "billing");
        assert_eq!(request.only[0].offset, 7);
        assert!(decode_json(message("switchyard.v1.ListTopicsRequest"), b"").is_ok());
        let error = decode_json(
            message("switchyard.v1.ListDeadLettersRequest"),
            br#"{"subscriptoin": "x"}"#,
        )
        .expect_err("unknown field");
        assert!(
            error
                .to_string()
                .contains("switchyard.v1.ListDeadLettersRequest")
                && error.to_string().contains("subscriptoin"),
            "{error}"
        );
    }

    #[test]
    fn errors_map_to_http_statuses_and_names() {
        let denied = GatewayError::Status(tonic::Status::permission_denied("no"));
        assert_eq!(
            (denied.http_status(), denied.code().as_str()),
            (403, "permission_denied")
        );
        let missing = GatewayError::Status(tonic::Status::not_found("no"));
        assert_eq!(
            (missing.http_status(), missing.code().as_str()),
            (404, "not_found")
        );
        let unknown = GatewayError::UnknownMethod("Nope".into());
        assert_eq!(unknown.http_status(), 404);
    }
}
