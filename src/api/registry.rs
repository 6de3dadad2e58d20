//! The narrow interface through which HTTP handlers reach the running streams.
//!
//! `app` owns the streams and implements [`Registry`]; handlers see a stream as a hub to
//! subscribe to, an HLS window, or a [`StreamView`] to describe, and change the set of streams
//! only through `add`, `remove` and `reload`. So `api` never names `app`, and a handler can be
//! read (and tested) with nothing but this trait behind it.
//!
//! Belongs here: the trait and the types it speaks. Does not belong here: how streams are
//! started, kept alive or stopped (`app`).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use uuid::Uuid;

use crate::config::{ConfigError, StreamConfig};
use crate::hls::Store;
use crate::hub::StreamHub;

/// Keeps a stream's upstream wanted while it lives (an on-demand camera starts for it and
/// idles out after the last one is dropped).
pub type Demand = Box<dyn Send + Sync>;

/// A stream as the API shows it.
#[derive(Clone, Debug)]
pub struct StreamView {
    pub config: StreamConfig,
    pub hub: Arc<StreamHub>,
    /// The upstream (source task) is running.
    pub streaming: bool,
    pub started_ms: i64,
    /// In a fleet: the node that pulls the camera (this one, or the owner it follows).
    pub node: Option<String>,
}

/// Why a stream cannot be served; the texts are the original's websocket close reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("Stream not found")]
    NotFound,
    #[error("Stream does not have this output type")]
    NoSuchOutput,
}

impl Unavailable {
    /// The reason as a static string (websocket close frames take one).
    pub fn reason(self) -> &'static str {
        match self {
            Unavailable::NotFound => "Stream not found",
            Unavailable::NoSuchOutput => "Stream does not have this output type",
        }
    }
}

/// What a reload did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadReport {
    pub added: Vec<Uuid>,
    pub removed: Vec<Uuid>,
    pub restarted: Vec<Uuid>,
    pub unchanged: usize,
    /// Streams in the file whose id is already used by a stream added through the API.
    pub skipped: Vec<Uuid>,
    /// Sections that changed but only take effect after a restart.
    pub restart_required: Vec<String>,
    pub warnings: Vec<String>,
}

/// The running streams, as handlers may use them.
pub trait Registry: Send + Sync {
    /// Every stream, in the order it was added.
    fn list(&self) -> Vec<StreamView>;
    /// A stream's hub, whatever its outputs (to count its viewers before an upgrade).
    fn hub(&self, id: &Uuid) -> Option<Arc<StreamHub>>;
    /// Any stream's hub with a demand that keeps its upstream running (starting an on-demand
    /// one), and whether it ran already (a snapshot of an idle camera waits for its first
    /// keyframe; one of a running camera does not).
    fn wake(&self, id: &Uuid) -> Option<(Arc<StreamHub>, bool, Demand)>;
    /// A stream with the `mse` output, and a demand that keeps its upstream running.
    fn live(&self, id: &Uuid) -> Result<(Arc<StreamHub>, Demand), Unavailable>;
    /// A stream with the `webrtc` output, and a demand that keeps its upstream running.
    fn webrtc(&self, id: &Uuid) -> Result<(Arc<StreamHub>, Demand), Unavailable>;
    /// A stream's HLS window, and a demand (an HLS request is viewer activity).
    fn hls(&self, id: &Uuid) -> Result<(Arc<Store>, Demand), Unavailable>;
    /// A stream's HLS window, to read its state (no demand).
    fn hls_store(&self, id: &Uuid) -> Option<Arc<Store>>;
    /// In a fleet with `[cluster] redirect = true`: the video server of the node that owns the
    /// stream (`http://host:port`, no trailing slash) when it is another node; HLS requests are
    /// redirected there instead of proxied.
    fn redirect(&self, _id: &Uuid) -> Option<String> {
        None
    }
    /// Starts a stream (`/enable_camera`) unless its id exists; whether it started. With
    /// `[api] persist` it is written into the configuration file too.
    fn add(&self, config: StreamConfig) -> BoxFuture<'_, bool>;
    /// Stops a stream and waits for it; whether it existed. With `[api] persist` it leaves the
    /// configuration file too.
    fn remove(&self, id: Uuid) -> BoxFuture<'_, bool>;
    /// Re-reads the configuration file and applies its stream changes; nothing changes on an
    /// error.
    fn reload(&self) -> BoxFuture<'_, Result<ReloadReport, ConfigError>>;
}
