//! HTTP surface: the routers of the API server and the video server, the built-in web assets,
//! CORS, and the one error type mapped to HTTP.
//!
//! Belongs here: routes, request parsing, response shapes. Does not belong here: stream
//! lifecycle (`app`), websocket media sessions (`mse`).

pub mod cors;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod ranged;
pub mod server;
pub mod streams;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use crate::app::App;
use crate::config::auth::Action;

/// Who may use a group of routes. Every route is created inside a group, and the group
/// decides its check, so a route cannot be added without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// No credential: health, the OpenAPI document, the favicon and player scripts.
    Public,
    /// Needs the action on the stream the request is about (see `guard::scope_of`).
    Guarded(Action),
}

/// A set of routes of one group; `add` is the only way a route gets into a router.
struct Routes {
    app: Arc<App>,
    groups: Vec<(Group, Router<Arc<App>>)>,
}

impl Routes {
    fn new(app: &Arc<App>) -> Routes {
        Routes {
            app: Arc::clone(app),
            groups: Vec::new(),
        }
    }

    fn add(mut self, group: Group, path: &str, route: MethodRouter<Arc<App>>) -> Routes {
        match self.groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, r)) => *r = std::mem::take(r).route(path, route),
            None => self.groups.push((group, Router::new().route(path, route))),
        }
        self
    }

    /// Each group with its check, the original's plain-text 404 for unknown routes and methods
    /// (after a credential when auth is on), and CORS if configured.
    fn finish(self) -> Router {
        let app = self.app;
        let mut router = Router::new();
        for (group, r) in self.groups {
            router = router.merge(match group {
                Group::Public => r,
                Group::Guarded(action) => r.route_layer(axum::middleware::from_fn_with_state(
                    (Arc::clone(&app), action),
                    guard::require,
                )),
            });
        }
        let mut router = router
            .fallback(guard::unknown_route)
            .method_not_allowed_fallback(guard::unknown_route)
            .layer(axum::extract::DefaultBodyLimit::max(
                app.config.limits.max_body_bytes,
            ))
            .with_state(Arc::clone(&app));
        if let Some(c) = cors::Cors::new(&app.config.cors) {
            router = router.layer(axum::middleware::from_fn_with_state(c, cors::layer));
        }
        router
    }
}

const ADMIN: Group = Group::Guarded(Action::Admin);
const LIVE: Group = Group::Guarded(Action::Live);
const ARCHIVE: Group = Group::Guarded(Action::Archive);
const METRICS: Group = Group::Guarded(Action::Metrics);

/// The API server (`[api]`): the original's routes.
pub fn api_router(app: Arc<App>) -> Router {
    both(Routes::new(&app))
        .add(ADMIN, "/list", get(streams::list))
        .add(ADMIN, "/status", get(streams::status))
        .add(ADMIN, "/enable_camera", post(streams::enable_camera))
        .add(ADMIN, "/disable_camera", post(streams::disable_camera))
        .add(ADMIN, "/config/reload", post(reload))
        .add(METRICS, "/metrics", get(metrics))
        .finish()
}

/// The video server (`[video]`): MSE websocket, the built-in page and players.
pub fn video_router(app: Arc<App>) -> Router {
    both(Routes::new(&app))
        .add(LIVE, "/ws/{segment}", get(crate::mse::live_handler))
        .add(LIVE, "/hls/{file}", get(crate::hls::http::handler))
        .add(LIVE, "/streams", get(streams::video_streams))
        .add(LIVE, "/", get(|| asset("/")))
        .add(LIVE, "/players/{player}/", get(player_page))
        .add(ARCHIVE, "/ws/archive", get(crate::archive::ws::handler))
        .add(
            Group::Public,
            "/favicon.ico",
            get(|| async { StatusCode::NO_CONTENT }),
        )
        // Scripts of the players carry no data; the pages do (through their requests).
        .add(Group::Public, "/players/{player}/{file}", get(player_file))
        .finish()
}

/// Routes on both servers: the archive's REST routes (the original has `ranges` on the API
/// server; players reach clips and playlists on the video server), health, stream details and
/// the OpenAPI document.
fn both(r: Routes) -> Routes {
    use crate::archive::http;
    r.add(Group::Public, "/openapi.json", get(openapi))
        .add(Group::Public, "/health", get(streams::health))
        .add(LIVE, "/streams/{id}", get(streams::stream_details))
        .add(ARCHIVE, "/archive/{id}/ranges", get(http::ranges))
        .add(ARCHIVE, "/archive/{id}/segments", get(http::segments))
        .add(ARCHIVE, "/archive/{id}/clip.mp4", get(http::clip))
        .add(ARCHIVE, "/archive/{id}/playlist.m3u8", get(http::playlist))
        .add(ARCHIVE, "/archive/{id}/files/{name}", get(http::file))
        .add(ADMIN, "/archive/{id}/share", post(http::share))
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
    match crate::app::reload::reload(&app).await {
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
