//! HTTP surface: the routers of the API server and the video server, the built-in web assets,
//! CORS, and the one error type mapped to HTTP.
//!
//! Belongs here: routes, request parsing, response shapes. Does not belong here: stream
//! lifecycle (`app`), websocket media sessions (`mse`).

pub mod auth;
pub mod cors;
pub mod error;
pub mod ranged;
pub mod streams;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;

/// Adds CORS (if configured) and the original's plain-text 404 for unknown routes and methods.
fn finish(router: Router<Arc<App>>, app: Arc<App>) -> Router {
    let mut router = router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            auth::layer,
        ))
        .with_state(Arc::clone(&app));
    if let Some(c) = cors::Cors::new(&app.config.cors) {
        router = router.layer(axum::middleware::from_fn_with_state(c, cors::layer));
    }
    router
}

/// The API server (`[api]`): the original's routes.
pub fn api_router(app: Arc<App>) -> Router {
    let r = Router::new()
        .route("/list", get(streams::list))
        .route("/status", get(streams::status))
        .route("/enable_camera", post(streams::enable_camera))
        .route("/disable_camera", post(streams::disable_camera))
        .route("/metrics", get(metrics))
        .route("/config/reload", post(reload));
    finish(archive_routes(r), app)
}

/// The video server (`[video]`): MSE websocket, the built-in page and players.
pub fn video_router(app: Arc<App>) -> Router {
    let r = Router::new()
        .route("/ws/{segment}", get(crate::mse::live_handler))
        .route("/hls/{file}", get(crate::hls::http::handler))
        .route("/streams", get(streams::video_streams))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/", get(|| asset("/")))
        .route("/players/{player}/", get(player_page))
        .route("/players/{player}/{file}", get(player_file))
        .route("/ws/archive", get(crate::archive::ws::handler));
    finish(archive_routes(r), app)
}

/// Routes on both servers: the archive's REST routes (the original has `ranges` on the API
/// server; players reach clips and playlists on the video server), health, stream details and
/// the OpenAPI document.
fn archive_routes(r: Router<Arc<App>>) -> Router<Arc<App>> {
    use crate::archive::http;
    r.route("/openapi.json", get(openapi))
        .route("/health", get(streams::health))
        .route("/streams/{id}", get(streams::stream_details))
        .route("/archive/{id}/ranges", get(http::ranges))
        .route("/archive/{id}/segments", get(http::segments))
        .route("/archive/{id}/clip.mp4", get(http::clip))
        .route("/archive/{id}/playlist.m3u8", get(http::playlist))
        .route("/archive/{id}/files/{name}", get(http::file))
        .route("/archive/{id}/share", post(http::share))
}

/// Web assets compiled into the binary, so the pages work with nothing else installed:
/// (path, body, content type).
const ASSETS: &[(&str, &[u8], &str)] = &[
    (
        "/",
        include_bytes!("../../web/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/players/mse/",
        include_bytes!("../../players/mse/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/players/mse/player.js",
        include_bytes!("../../players/mse/player.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/players/hls/",
        include_bytes!("../../players/hls/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/players/hls/player.js",
        include_bytes!("../../players/hls/player.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/players/hls/hls.light.min.js",
        include_bytes!("../../players/hls/vendor/hls.light.min.js"),
        "text/javascript; charset=utf-8",
    ),
];

/// The OpenAPI 3 document of every route (checked against the live server by a fuzz test).
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
async fn openapi() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        OPENAPI,
    )
        .into_response()
}

/// `POST /config/reload`: re-reads the configuration file and applies its stream changes;
/// 400 with the file, line and key of an error (nothing is changed then).
async fn reload(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    match crate::reload::reload(&app).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => error::ApiError::BadRequest(e.to_string()).into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    let text = app.metrics.render(&app);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn player_page(Path(player): Path<String>) -> Response {
    asset(&format!("/players/{player}/")).await
}

async fn player_file(Path((player, file)): Path<(String, String)>) -> Response {
    asset(&format!("/players/{player}/{file}")).await
}

async fn asset(path: &str) -> Response {
    let Some((_, body, kind)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return error::not_found().await;
    };
    (
        [
            (header::CONTENT_TYPE, *kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *body,
    )
        .into_response()
}
