//! The API's one error type and its mapping to HTTP: every handler error goes through here, so
//! status codes and body shapes are decided in one place.

use axum::http::StatusCode;
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadJson | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        // The original's handlers spell the key `Error`.
        (
            status,
            Json(serde_json::json!({ "Error": self.to_string() })),
        )
            .into_response()
    }
}

impl IntoResponse for crate::archive::ArchiveError {
    fn into_response(self) -> Response {
        use crate::archive::ArchiveError as E;
        let status = match &self {
            E::BadRequest(_) | E::TooLarge(_) => StatusCode::BAD_REQUEST,
            E::NotAvailable(_) | E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Storage(_) => StatusCode::BAD_GATEWAY,
        };
        // The original's archive handlers spell the key `error`.
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// gin's answer for unknown routes and wrong methods: plain text, 404.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found").into_response()
}
