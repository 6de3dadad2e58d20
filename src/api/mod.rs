//! HTTP surface: the routers of the API server and the video server, the built-in web assets,
//! CORS, and the one error type mapped to HTTP.
//!
//! Belongs here: routes, request parsing, response shapes, the websocket upgrades. Does not
//! belong here: stream lifecycle (`app`, reached through [`registry::Registry`]), websocket
//! media sessions (`mse`, `archive::ws`), media work.

pub mod access;
pub mod archive;
pub mod cors;
pub mod error;
pub mod guard;
pub mod hls;
pub mod live;
pub mod metrics;
pub mod ranged;
pub mod registry;
pub mod server;
pub mod snapshot;
pub mod streams;
pub mod whep;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, MethodRouter};
use axum::Router;

use tokio_util::sync::CancellationToken;

use crate::archive::Archive;
use crate::config::auth::Action;
use crate::config::Config;
use crate::webhooks::Webhooks;

/// What every handler may reach: the registry of streams, the archive, the settings and the
/// shared counters. `app` builds it once the archive is open.
pub struct Ctx {
    pub streams: Arc<dyn registry::Registry>,
    /// Recording and serving, when `[archive]` is on.
    pub archive: Option<Arc<Archive>>,
    pub config: Arc<Config>,
    /// Credential checks, when `[auth]` is on.
    pub authority: Option<access::Authority>,
    /// Both servers' connection and viewer counts (`[limits]`).
    pub server_stats: Arc<server::ServerStats>,
    /// What `/metrics` renders.
    pub metrics: metrics::Metrics,
    /// The WebRTC output (`/whep/{id}`): its socket and sessions.
    pub webrtc: crate::webrtc::Webrtc,
    /// The live MSE viewers' per-stream writers.
    pub mse_writers: Arc<crate::mse::Writers>,
    /// JPEG snapshots (`/snapshot/{id}.jpg`), cached per keyframe.
    pub snapshots: crate::snapshot::Snapshots,
    /// For `/metrics` (events dropped).
    pub webhooks: Arc<Webhooks>,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
    /// This node's membership of the fleet, once joined (`[cluster]`).
    #[cfg(feature = "cluster")]
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

impl Ctx {
    pub fn new(
        streams: Arc<dyn registry::Registry>,
        archive: Option<Arc<Archive>>,
        config: Arc<Config>,
        webhooks: Arc<Webhooks>,
        shutdown: CancellationToken,
    ) -> Arc<Ctx> {
        let webrtc = crate::webrtc::Webrtc::new(config.webrtc.clone(), shutdown.clone());
        let metrics = metrics::Metrics::new(config.cluster.as_ref().map(|c| c.node_id.as_str()));
        Arc::new(Ctx {
            streams,
            archive,
            authority: config
                .auth
                .enabled
                .then(|| access::Authority::new(&config.auth)),
            config,
            server_stats: Arc::default(),
            metrics,
            mse_writers: Arc::default(),
            snapshots: crate::snapshot::Snapshots::new(snapshot::DECODERS),
            webrtc,
            webhooks,
            shutdown,
            #[cfg(feature = "cluster")]
            cluster: std::sync::OnceLock::new(),
        })
    }
}

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
    ctx: Arc<Ctx>,
    groups: Vec<(Group, Router<Arc<Ctx>>)>,
}

impl Routes {
    fn new(ctx: &Arc<Ctx>) -> Routes {
        Routes {
            ctx: Arc::clone(ctx),
            groups: Vec::new(),
        }
    }

    fn add(mut self, group: Group, path: &str, route: MethodRouter<Arc<Ctx>>) -> Routes {
        match self.groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, r)) => *r = std::mem::take(r).route(path, route),
            None => self.groups.push((group, Router::new().route(path, route))),
        }
        self
    }

    /// Each group with its check, the original's plain-text 404 for unknown routes and methods
    /// (after a credential when auth is on), and CORS if configured.
    fn finish(self) -> Router {
        let ctx = self.ctx;
        let mut router = Router::new();
        for (group, r) in self.groups {
            router = router.merge(match group {
                Group::Public => r,
                Group::Guarded(action) => r.route_layer(axum::middleware::from_fn_with_state(
                    (Arc::clone(&ctx), action),
                    guard::require,
                )),
            });
        }
        let mut router = router
            .fallback(guard::unknown_route)
            .method_not_allowed_fallback(guard::unknown_route)
            .layer(axum::extract::DefaultBodyLimit::max(
                ctx.config.limits.max_body_bytes,
            ))
            .with_state(Arc::clone(&ctx));
        if let Some(c) = cors::Cors::new(&ctx.config.cors) {
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
pub fn api_router(ctx: Arc<Ctx>) -> Router {
    both(Routes::new(&ctx))
        .add(ADMIN, "/list", get(streams::list))
        .add(ADMIN, "/status", get(streams::status))
        .add(ADMIN, "/enable_camera", post(streams::enable_camera))
        .add(ADMIN, "/disable_camera", post(streams::disable_camera))
        .add(ADMIN, "/config/reload", post(reload))
        .add(METRICS, "/metrics", get(metrics))
        .add(ADMIN, "/cluster", get(cluster))
        // Fleet nodes ask each other this while cut off from etcd (no credential to hand).
        .add(Group::Public, "/cluster/health", get(cluster_health))
        .finish()
}

/// The video server (`[video]`): MSE websocket, the built-in page and players.
pub fn video_router(ctx: Arc<Ctx>) -> Router {
    both(Routes::new(&ctx))
        .add(LIVE, "/ws/{segment}", get(live::mse))
        .add(LIVE, "/hls/{file}", get(hls::handler))
        .add(LIVE, "/whep/{id}", post(whep::offer))
        .add(
            LIVE,
            "/whep/{id}/{session}",
            patch(whep::patch).delete(whep::delete),
        )
        .add(LIVE, "/streams", get(streams::video_streams))
        .add(LIVE, "/", get(|| asset("/")))
        .add(LIVE, "/players/{player}/", get(player_page))
        .add(ARCHIVE, "/ws/archive", get(live::archive))
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
    use archive as http;
    r.add(Group::Public, "/openapi.json", get(openapi))
        .add(Group::Public, "/health", get(streams::health))
        .add(LIVE, "/streams/{id}", get(streams::stream_details))
        .add(LIVE, "/snapshot/{file}", get(snapshot::handler))
        .add(ARCHIVE, "/archive/{id}/ranges", get(http::ranges))
        .add(ARCHIVE, "/archive/{id}/segments", get(http::segments))
        .add(ARCHIVE, "/archive/{id}/clip.mp4", get(http::clip))
        .add(ARCHIVE, "/archive/{id}/playlist.m3u8", get(http::playlist))
        .add(ARCHIVE, "/archive/{id}/files/{name}", get(http::file))
        .add(ARCHIVE, "/archive/{id}/thumbnails", get(http::thumbnails))
        .add(
            ARCHIVE,
            "/archive/{id}/thumbnails/{name}",
            get(http::thumbnail),
        )
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
        "/players/webrtc/",
        include_bytes!("../../players/webrtc/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/players/webrtc/player.js",
        include_bytes!("../../players/webrtc/player.js"),
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
async fn reload(axum::extract::State(ctx): axum::extract::State<Arc<Ctx>>) -> Response {
    match ctx.streams.reload().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => error::ApiError::BadRequest(e.to_string()).into_response(),
    }
}

/// `GET /cluster` (ours): the fleet as this node sees it (`{"enabled": false}` without one).
async fn cluster(axum::extract::State(ctx): axum::extract::State<Arc<Ctx>>) -> Response {
    #[cfg(feature = "cluster")]
    if let Some(c) = ctx.cluster.get() {
        let mut v = serde_json::to_value(c.status()).unwrap_or_default();
        v["enabled"] = serde_json::Value::Bool(true);
        return axum::Json(v).into_response();
    }
    let _ = &ctx;
    axum::Json(serde_json::json!({"enabled": false})).into_response()
}

/// `GET /cluster/health` (ours, public): whether this node reaches etcd; nothing else.
async fn cluster_health(axum::extract::State(ctx): axum::extract::State<Arc<Ctx>>) -> Response {
    #[cfg(feature = "cluster")]
    if let Some(c) = ctx.cluster.get() {
        let s = c.status();
        return axum::Json(serde_json::json!({"enabled": true, "etcd_ok": s.etcd_ok}))
            .into_response();
    }
    let _ = &ctx;
    axum::Json(serde_json::json!({"enabled": false})).into_response()
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(axum::extract::State(ctx): axum::extract::State<Arc<Ctx>>) -> Response {
    let text = ctx.metrics.render(&ctx);
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
