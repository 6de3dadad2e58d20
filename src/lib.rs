//! video-server: a re-streaming gateway for IP cameras, drop-in compatible with
//! LdDl/video-server.
//!
//! ```text
//! source::rtsp (retina) ─┐
//! source::file ──────────┴─► hub (bounded GOP ring per stream) ──► mse (fMP4 over websocket)
//!                                                               ├─► hls      (CMAF segments, LL-HLS)
//!                                                               └─► archive  (fMP4 files, disk or S3)
//! api (status, list, enable/disable, CORS) · config · app (wiring, shutdown)
//! ```
//!
//! Stages depend on `media` and `hub`, never on each other.

pub mod api;
pub mod app;
pub mod archive;
pub mod config;
pub mod events;
pub mod hls;
pub mod hub;
pub mod media;
pub mod mp4;
pub mod mse;
pub mod source;
pub mod webhooks;
pub mod wsproto;
