//! The operator console: a browser UI served at `/ui` on the broker's HTTP
//! port (`metrics_listen`), with the Admin API as JSON under
//! `/api/v1/admin/{Method}` ([`crate::api::gateway`]). The page is plain
//! HTML, CSS and JavaScript compiled into the binary: nothing to build or
//! serve separately.
//!
//! Safety: every API call goes through the gRPC Admin service with the
//! caller's bearer token, so the console can do exactly what that token
//! may; changes are audit-logged there. API calls must be `POST` with
//! `Content-Type: application/json`, which a page of another origin cannot
//! send without a CORS preflight this server never answers — so, even
//! with authentication off, another site cannot make a visitor's browser
//! redrive or delete.

use crate::api::gateway::AdminGateway;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// Only this origin's scripts, styles and API; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's routes: the UI and the JSON Admin API.
pub fn router(gateway: AdminGateway) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/ui/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/v1/admin/{method}", post(admin_call))
        .with_state(gateway)
}

/// A static file of the UI, with headers that keep it to itself.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `POST /api/v1/admin/{method}`: one Admin call, JSON in and out.
async fn admin_call(
    State(gateway): State<AdminGateway>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json_body {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the request as JSON with Content-Type: application/json",
        );
    }
    match gateway
        .call(&method, headers.get(header::AUTHORIZATION), &body)
        .await
    {
        Ok(reply) => json_response(StatusCode::OK, &reply),
        Err(error) => json_error(
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &error.code(),
            &error.to_string(),
        ),
    }
}

/// `{"code": ..., "message": ...}` with `status`.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({"code": code, "message": message}),
    )
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
