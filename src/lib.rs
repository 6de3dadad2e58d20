//! video-server: a re-streaming gateway for IP cameras, drop-in compatible with
//! LdDl/video-server.
//!
//! ```text
//! source::rtsp (retina) ─┐
//! source::file ──────────┴─► hub (bounded GOP ring per stream) ──► mse      (fMP4 over websocket)
//!                                                               ├─► hls      (CMAF segments, LL-HLS)
//!                                                               ├─► snapshot (JPEG of the newest keyframe)
//!                                                               ├─► archive  (fMP4 files, disk or S3)
//!                                                               └─► webhooks (events)
//! api (HTTP: routes, auth, the websocket upgrades; reaches streams through api::registry)
//! app (the registry of streams, wiring, serving, signals, reload)
//! ```
//!
//! The dependency rule (checked by `tests/layers.rs`; see docs/architecture.md):
//! - vocabulary: `media`, `events`, `wsproto`, `mp4`, `config`, `hub`;
//! - stages: `source`, `mse`, `hls`, `snapshot`, `archive`, `webhooks` import the vocabulary, never each
//!   other, `api` or `app`;
//! - `api` imports anything but `app`; `app` imports anything; nothing imports `app`.

pub mod api;
pub mod app;
pub mod archive;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod events;
pub mod hls;
pub mod hub;
pub mod media;
pub mod mp4;
pub mod mse;
pub mod snapshot;
pub mod source;
pub mod webhooks;
pub mod webrtc;
pub mod wsproto;
