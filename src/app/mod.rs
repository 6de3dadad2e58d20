//! Wiring: the registry of running streams and the tasks of each, behind the API's
//! [`Registry`] interface; serving, signals and reload live beside it.
//!
//! `app` depends on every stage and on `api`; nothing depends on `app`.
//!
//! - `mod.rs`: [`App`], the streams that exist, starting and stopping a stream's tasks (source,
//!   HLS muxer, recorder, webhook watcher), and the `Registry` the handlers use.
//! - `upstream`: on-demand reference counting of a stream's source task.
//! - `health`: the on-demand health-probe sweep.
//! - `serve`: listeners, the two servers, SIGHUP/SIGINT/SIGTERM and ordered shutdown.
//! - `reload`: applying a changed configuration file.
//! - `telemetry`: logging set-up.
//!
//! Does not belong here: request handling (`api`), media work (the stages).

#[cfg(feature = "cluster")]
mod fleet;
mod health;
pub mod reload;
mod serve;
pub mod telemetry;
mod upstream;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::api::registry::{Demand, Registry, ReloadReport, StreamView, Unavailable};
use crate::config::{Config, ConfigError, StreamConfig};
use crate::hub::{Hub, Limits, StreamHub};
pub use serve::{bind, serve, shutdown_signal, Bound};
use upstream::Upstream;

/// A stream that exists.
struct Running {
    config: StreamConfig,
    /// Came from the configuration file (reload may stop or restart it), not from the API.
    from_config: bool,
    upstream: Arc<Upstream>,
    started_ms: i64,
    /// Its HLS window, if it has the `hls` output; the task feeding it ends with the stream.
    hls: Option<Arc<crate::hls::Store>>,
    /// Its recorder was started (in a fleet, only the owner records).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    recording: bool,
    /// In a fleet: the node it is followed through (it does not pull the camera itself).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    following: Option<String>,
}

/// The running system: every stream and what serves it.
pub struct App {
    pub config: Arc<Config>,
    pub hub: Hub,
    /// Streams in the order they were added.
    streams: Mutex<Vec<(Uuid, Running)>>,
    /// Cancelled when a stop is asked for (SIGINT, SIGTERM): a fleet node hands off first.
    pub stop: CancellationToken,
    /// Cancelled when the process shuts down: viewers are closed, sources stop.
    pub shutdown: CancellationToken,
    /// The archive, once opened by [`serve`] (absent in tests that build an `App` by hand).
    archive: std::sync::OnceLock<Arc<crate::archive::Archive>>,
    /// `[[webhooks]]` (empty when none are configured).
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// This node's membership of the fleet, once joined (`[cluster]`).
    #[cfg(feature = "cluster")]
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Serialises edits of the configuration file (`[api] persist`).
    persist_lock: tokio::sync::Mutex<()>,
    /// The cameras of the configuration file as last loaded (at start, then by each reload):
    /// in a fleet, the file's share of the fleet's list.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    file_streams: Mutex<Vec<StreamConfig>>,
}

impl App {
    /// Must be called inside the runtime (webhooks start their sender tasks).
    pub fn new(config: Config) -> Arc<App> {
        let shutdown = CancellationToken::new();
        let webhooks = crate::webhooks::Webhooks::start(&config.webhooks, &shutdown);
        Arc::new(App {
            webhooks,
            hub: Hub::new(Limits::default()),
            streams: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            shutdown,
            persist_lock: tokio::sync::Mutex::new(()),
            archive: std::sync::OnceLock::new(),
            #[cfg(feature = "cluster")]
            cluster: std::sync::OnceLock::new(),
            file_streams: Mutex::new(config.streams.clone()),
            config: Arc::new(config),
        })
    }

    /// The archive (recording and serving), once opened.
    pub fn archive(&self) -> Option<&Arc<crate::archive::Archive>> {
        self.archive.get()
    }

    /// Opens the archive: repairs, indexes, starts uploads and retention. Call before
    /// [`App::start_configured`] so recorders start with their streams.
    pub async fn open_archive(&self) {
        let archive = crate::archive::Archive::open(
            &self.config.archive,
            &self.config.streams,
            Arc::clone(&self.webhooks) as Arc<dyn crate::events::EventSink>,
        )
        .await;
        archive.set_thumbnailer(Arc::new(Thumbnails::default()));
        let _ = self.archive.set(archive);
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, Vec<(Uuid, Running)>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts every configured stream.
    pub fn start_configured(&self) {
        for s in self.config.streams.clone() {
            self.start(s, true);
        }
    }

    /// With `[api] persist`: writes a stream added (`Some`) or removed (`None`) through the API
    /// into the configuration file, so it survives a restart (and reload treats it as the
    /// file's). Failures are logged; the API answer stays the original's.
    pub async fn persist(&self, id: &Uuid, added: Option<&StreamConfig>) {
        if !self.config.api.persist {
            return;
        }
        let path = &self.config.path;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            warn!(
                "api.persist works with TOML files only; {} is left as it is",
                path.display()
            );
            return;
        }
        let _guard = self.persist_lock.lock().await;
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) => {
                warn!("cannot read {} to persist stream {id}: {e}", path.display());
                return;
            }
        };
        let edited = match added {
            Some(s) => crate::config::persist::append_stream(&text, s),
            None => crate::config::persist::remove_stream(&text, id),
        };
        let Some(edited) = edited else {
            return; // not in the file (removal), or not an RTSP stream
        };
        let p = path.clone();
        match tokio::task::spawn_blocking(move || {
            crate::config::persist::write_atomically(&p, &edited)
        })
        .await
        {
            Ok(Ok(())) => {
                info!(stream = %id, file = %path.display(), "configuration file updated");
                if added.is_some() {
                    if let Some((_, r)) = self.streams().iter_mut().find(|(s, _)| s == id) {
                        r.from_config = true;
                    }
                }
            }
            Ok(Err(e)) => warn!("cannot write {}: {e}", path.display()),
            Err(e) => warn!("cannot write {}: {e}", path.display()),
        }
    }

    /// The configuration of every stream that came from the file, by id.
    pub fn configured_streams(&self) -> Vec<StreamConfig> {
        self.streams()
            .iter()
            .filter(|(_, r)| r.from_config)
            .map(|(_, r)| r.config.clone())
            .collect()
    }

    /// Starts a stream from the configuration file (see [`App::start_stream`]).
    pub fn start_configured_stream(&self, config: StreamConfig) -> bool {
        self.start(config, true)
    }

    /// Starts a stream unless one with the same id exists; returns whether it started.
    pub fn start_stream(&self, config: StreamConfig) -> bool {
        self.start(config, false)
    }

    fn start(&self, config: StreamConfig, from_config: bool) -> bool {
        self.start_as(config, from_config, true, None)
    }

    /// Starts a stream; `record`: with its recorder (when the archive records it);
    /// `source`: where frames come from instead of the camera, and whether on demand (a fleet
    /// node following the camera's owner).
    fn start_as(
        &self,
        config: StreamConfig,
        from_config: bool,
        record: bool,
        source: Option<(crate::config::SourceSpec, bool)>,
    ) -> bool {
        let mut streams = self.streams();
        if streams.iter().any(|(id, _)| *id == config.id) {
            return false;
        }
        let hub = self.hub.get_or_create(config.id);
        let (spec, on_demand) = source.unwrap_or((config.source.clone(), config.on_demand));
        let upstream = Upstream::new(
            spec,
            hub,
            on_demand,
            self.config.idle(),
            self.shutdown.clone(),
        );
        let hls = config.outputs.hls.then(|| {
            let store = crate::hls::new_store(config.id, &self.config.hls);
            tokio::spawn(crate::hls::run(
                Arc::clone(&upstream.hub),
                Arc::clone(&store),
                self.config.hls.clone(),
                self.shutdown.child_token(),
            ));
            store
        });
        if let (Some(archive), true) = (self.archive(), record) {
            archive.record(&config, Arc::clone(&upstream.hub));
        }
        if !self.webhooks.is_empty() {
            tokio::spawn(crate::webhooks::watch_stream(
                Arc::clone(&self.webhooks),
                Arc::clone(&upstream.hub),
            ));
        }
        info!(stream = %config.id, url = %config.source.display_url(), on_demand = config.on_demand, "stream added");
        streams.push((
            config.id,
            Running {
                config,
                from_config,
                upstream,
                started_ms: crate::media::unix_ms_now(),
                hls,
                recording: record,
                following: None,
            },
        ));
        true
    }

    /// Stops a stream and waits for its upstream to close; returns whether it existed.
    pub async fn stop_stream(&self, id: &Uuid) -> bool {
        let running = {
            let mut streams = self.streams();
            let Some(i) = streams.iter().position(|(s, _)| s == id) else {
                return false;
            };
            streams.remove(i).1
        };
        running.upstream.stop().await;
        self.hub.remove(id);
        info!(stream = %id, "stream removed");
        true
    }

    /// Every stream, in order.
    pub fn list(&self) -> Vec<StreamView> {
        self.streams()
            .iter()
            .map(|(_, r)| StreamView {
                config: r.config.clone(),
                hub: Arc::clone(&r.upstream.hub),
                streaming: r.upstream.is_running(),
                started_ms: r.started_ms,
                node: self
                    .config
                    .cluster
                    .as_ref()
                    .map(|c| r.following.clone().unwrap_or_else(|| c.node_id.clone())),
            })
            .collect()
    }

    /// The hub of a stream that has the output `wanted` selects, with a guard that keeps its
    /// upstream running (starting an on-demand one), or the reason it cannot be served (sent to
    /// websocket clients as the close reason).
    fn acquire_live(
        &self,
        id: &Uuid,
        has: fn(&crate::config::Outputs) -> bool,
    ) -> Result<(Arc<StreamHub>, Demand), Unavailable> {
        let streams = self.streams();
        let Some((_, r)) = streams.iter().find(|(s, _)| s == id) else {
            return Err(Unavailable::NotFound);
        };
        if !has(&r.config.outputs) {
            return Err(Unavailable::NoSuchOutput);
        }
        Ok((Arc::clone(&r.upstream.hub), Box::new(r.upstream.acquire())))
    }

    /// A stream's HLS window, with a guard that keeps its upstream running (an HLS request is
    /// viewer activity: it starts an on-demand upstream and re-arms its idle timer).
    fn acquire_hls(&self, id: &Uuid) -> Result<(Arc<crate::hls::Store>, Demand), Unavailable> {
        let streams = self.streams();
        let Some((_, r)) = streams.iter().find(|(s, _)| s == id) else {
            return Err(Unavailable::NotFound);
        };
        let Some(store) = &r.hls else {
            return Err(Unavailable::NoSuchOutput);
        };
        Ok((Arc::clone(store), Box::new(r.upstream.acquire())))
    }

    /// A stream's HLS window for reading its state (no viewer activity is counted).
    pub fn hls_store(&self, id: &Uuid) -> Option<Arc<crate::hls::Store>> {
        let streams = self.streams();
        let (_, r) = streams.iter().find(|(s, _)| s == id)?;
        r.hls.clone()
    }

    /// Stops every stream (for shutdown).
    pub async fn stop_all(&self) {
        let ids: Vec<Uuid> = self.streams().iter().map(|(id, _)| *id).collect();
        futures::future::join_all(ids.iter().map(|id| self.stop_stream(id))).await;
    }
}

impl Registry for App {
    fn list(&self) -> Vec<StreamView> {
        App::list(self)
    }

    fn hub(&self, id: &Uuid) -> Option<Arc<StreamHub>> {
        self.hub.get(id)
    }

    fn live(&self, id: &Uuid) -> Result<(Arc<StreamHub>, Demand), Unavailable> {
        self.acquire_live(id, |o| o.mse)
    }

    fn webrtc(&self, id: &Uuid) -> Result<(Arc<StreamHub>, Demand), Unavailable> {
        self.acquire_live(id, |o| o.webrtc)
    }

    fn wake(&self, id: &Uuid) -> Option<(Arc<StreamHub>, bool, Demand)> {
        let streams = self.streams();
        let (_, r) = streams.iter().find(|(s, _)| s == id)?;
        let running = r.upstream.is_running();
        Some((
            Arc::clone(&r.upstream.hub),
            running,
            Box::new(r.upstream.acquire()),
        ))
    }

    fn hls(&self, id: &Uuid) -> Result<(Arc<crate::hls::Store>, Demand), Unavailable> {
        self.acquire_hls(id)
    }

    fn hls_store(&self, id: &Uuid) -> Option<Arc<crate::hls::Store>> {
        App::hls_store(self, id)
    }

    #[cfg(feature = "cluster")]
    fn redirect(&self, id: &Uuid) -> Option<String> {
        let me = self.config.cluster.as_ref().filter(|c| c.redirect)?;
        let owner = self.cluster.get()?.owner(id)?;
        (owner.node_id != me.node_id).then(|| owner.advertise_url.trim_end_matches('/').to_owned())
    }

    fn add(&self, config: StreamConfig) -> BoxFuture<'_, bool> {
        async move {
            #[cfg(feature = "cluster")]
            if let Some(c) = self.cluster.get() {
                return match c.add_camera(&config).await {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(stream = %config.id, "cannot add the camera to the fleet: {e}");
                        false
                    }
                };
            }
            let id = config.id;
            let started = self.start_stream(config.clone());
            if started {
                self.persist(&id, Some(&config)).await;
            }
            started
        }
        .boxed()
    }

    fn remove(&self, id: Uuid) -> BoxFuture<'_, bool> {
        async move {
            #[cfg(feature = "cluster")]
            if let Some(c) = self.cluster.get() {
                return match c.remove_camera(&id).await {
                    Ok(listed) => listed,
                    Err(e) => {
                        warn!(stream = %id, "cannot remove the camera from the fleet: {e}");
                        false
                    }
                };
            }
            let existed = self.stop_stream(&id).await;
            if existed {
                self.persist(&id, None).await;
            }
            existed
        }
        .boxed()
    }

    fn reload(&self) -> BoxFuture<'_, Result<ReloadReport, ConfigError>> {
        reload::reload(self).boxed()
    }
}

/// Archive thumbnails made by the `snapshot` stage's decoder, one at a time for the whole
/// process (they are rare: one per stream per `thumbnail_interval_ms`).
struct Thumbnails {
    one_at_a_time: Arc<tokio::sync::Semaphore>,
}

impl Default for Thumbnails {
    fn default() -> Thumbnails {
        Thumbnails {
            one_at_a_time: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

impl crate::archive::thumbs::Thumbnailer for Thumbnails {
    fn jpeg(
        &self,
        keyframe: crate::media::Frame,
        width: u32,
    ) -> futures::future::BoxFuture<'static, Option<bytes::Bytes>> {
        let pool = Arc::clone(&self.one_at_a_time);
        async move {
            let _permit = pool.acquire().await.ok()?;
            crate::snapshot::picture(&keyframe, Some(width)).await
        }
        .boxed()
    }
}
