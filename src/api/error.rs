//! The API's one error type and its mapping to HTTP: every handler error goes through here, so
//! status codes and body shapes are decided in one place.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// What can go wrong in a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The original's 400 for an unusable JSON body: `{"Error":"Bad JSON binding"}`.
    #[error("Bad JSON binding")]
    BadJson,
    /// A 400 with the original's message, e.g. for a bad output type.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown route or resource.
    #[error("{0}")]
    NotFound(String),
    /// No credential, or one that does not verify: 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// A credential that does not allow this (or a websocket from a foreign origin): 403.
    #[error("{0}")]
    Forbidden(String),
    /// A body of the wrong `Content-Type`: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request cannot be served as asked (a WebRTC offer without the stream's codec): 406.
    #[error("{0}")]
    NotAcceptable(String),
    /// Something the gateway needs failed (a WebRTC session): 500.
    #[error("{0}")]
    Internal(String),
    /// A plain request to a websocket route: 426 with `Upgrade: websocket`.
    #[error("{0}")]
    UpgradeRequired(String),
    /// Over a `[limits]` cap: 503 with `Retry-After`.
    #[error("{0}")]
    Busy(String),
}

impl From<crate::wsproto::HandshakeError> for ApiError {
    fn from(e: crate::wsproto::HandshakeError) -> Self {
        match e {
            crate::wsproto::HandshakeError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            crate::wsproto::HandshakeError::UpgradeRequired(_) => {
                ApiError::UpgradeRequired(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadJson | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
        };
        let reason = self.to_string();
        match self {
            // The original's handlers spell the key `Error`.
            ApiError::BadJson | ApiError::BadRequest(_) | ApiError::NotFound(_) => {
                (status, Json(serde_json::json!({ "Error": reason }))).into_response()
            }
            // Ours (auth and limits) spell it `error`, as the archive's do.
            ApiError::Unauthorized(_) => (
                status,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({ "error": reason })),
            )
                .into_response(),
            ApiError::UpgradeRequired(_) => (
                status,
                [(header::UPGRADE, "websocket")],
                Json(serde_json::json!({ "error": reason })),
            )
                .into_response(),
            ApiError::Busy(_) => (
                status,
                [(header::RETRY_AFTER, "5")],
                Json(serde_json::json!({ "error": reason })),
            )
                .into_response(),
            ApiError::Forbidden(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::NotAcceptable(_)
            | ApiError::Internal(_) => {
                (status, Json(serde_json::json!({ "error": reason }))).into_response()
            }
        }
    }
}

impl From<crate::webrtc::WebrtcError> for ApiError {
    fn from(e: crate::webrtc::WebrtcError) -> ApiError {
        use crate::webrtc::WebrtcError as E;
        match e {
            E::BadOffer(m) => ApiError::BadRequest(m),
            E::NoCodec(m) => ApiError::NotAcceptable(m),
            E::Unavailable(m) => ApiError::Busy(m),
            E::NoSession => ApiError::NotFound(e.to_string()),
            E::Session(m) => ApiError::Internal(m),
        }
    }
}

impl IntoResponse for crate::archive::ArchiveError {
    fn into_response(self) -> Response {
        use crate::archive::ArchiveError as E;
        let status = match &self {
            E::BadRequest(_) | E::TooLarge(_) => StatusCode::BAD_REQUEST,
            E::NotAvailable(_) | E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Storage(_) => StatusCode::BAD_GATEWAY,
            E::ListingFailed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // The original's archive handlers spell the key `error`.
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl IntoResponse for crate::snapshot::SnapshotError {
    fn into_response(self) -> Response {
        use crate::snapshot::ffmpeg::DecodeError as D;
        use crate::snapshot::SnapshotError as E;
        let status = match &self {
            E::NoVideo => StatusCode::NOT_FOUND,
            E::NoPicture | E::Decode(D::Missing(_)) => StatusCode::SERVICE_UNAVAILABLE,
            E::Decode(D::Failed(_) | D::TimedOut) => StatusCode::BAD_GATEWAY,
        };
        let mut r = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        }
        r
    }
}

/// gin's answer for unknown routes and wrong methods: plain text, 404.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found").into_response()
}
