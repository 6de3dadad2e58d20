//! CORS with the original's semantics (gin-contrib/cors as configured by `[cors]`), on both
//! servers: `*` allows any origin; a preflight gets 204; a request from an origin that is not
//! allowed gets 403; requests without `Origin` (and same-host ones) pass untouched.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::CorsConfig;

/// Defaults gin-contrib starts from before `[cors]` overrides them.
const DEFAULT_METHODS: &str = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS";
const DEFAULT_HEADERS: &str = "Origin,Content-Length,Content-Type";
const MAX_AGE_S: &str = "43200";

/// Precomputed header values.
#[derive(Debug)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
    methods: HeaderValue,
    headers: HeaderValue,
    expose: Option<HeaderValue>,
    credentials: bool,
}

fn join(list: &[String], default: &str) -> HeaderValue {
    let s = if list.is_empty() {
        default.to_owned()
    } else {
        list.join(",")
    };
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Cors {
    /// `None` when CORS is disabled.
    pub fn new(c: &CorsConfig) -> Option<Arc<Cors>> {
        if !c.enabled {
            return None;
        }
        Some(Arc::new(Cors {
            any: c.allow_origins.iter().any(|o| o == "*"),
            origins: c
                .allow_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            methods: join(&c.allow_methods, DEFAULT_METHODS),
            headers: join(&c.allow_headers, DEFAULT_HEADERS),
            expose: (!c.expose_headers.is_empty()).then(|| join(&c.expose_headers, "")),
            credentials: c.allow_credentials,
        }))
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// The middleware.
pub async fn layer(State(cors): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let same_host = origin
        .split_once("://")
        .is_some_and(|(_, h)| h.eq_ignore_ascii_case(host));
    if same_host {
        return next.run(req).await;
    }
    if !cors.allows(&origin) {
        return (StatusCode::FORBIDDEN, Body::empty()).into_response();
    }
    let allow_origin = if cors.any {
        HeaderValue::from_static("*")
    } else {
        HeaderValue::from_str(&origin).unwrap_or_else(|_| HeaderValue::from_static("null"))
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, cors.methods.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, cors.headers.clone());
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_S),
        );
        r
    } else {
        let mut r = next.run(req).await;
        if let Some(e) = &cors.expose {
            r.headers_mut()
                .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    if !cors.any {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if cors.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    resp
}
