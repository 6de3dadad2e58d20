//! Wiring: the running streams, the two HTTP servers, and ordered shutdown.
//!
//! Belongs here: starting and stopping a stream's tasks (its source and HLS muxer; the archive
//! will join them), looking streams up for the outputs, binding listeners, and the
//! shutdown sequence. Does not belong here: request handling (`api`, `mse`), media work.

pub mod reload;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{Config, Outputs, SourceSpec, StreamConfig};
use crate::hub::{Hub, Limits, StreamHub};

/// Kernel send buffer of each video-server connection, bytes.
const VIEWER_SEND_BUFFER: usize = 256 * 1024;

/// A stream's upstream (its source task), started and stopped by demand.
///
/// A permanent stream runs from the start. An on-demand stream starts at its first viewer and
/// stops `idle` after the last one left, like the original's `[on_demand]`.
pub struct Upstream {
    source: SourceSpec,
    hub: Arc<StreamHub>,
    on_demand: bool,
    idle: Duration,
    parent: CancellationToken,
    state: Mutex<UpState>,
}

#[derive(Default)]
struct UpState {
    running: Option<(CancellationToken, JoinHandle<()>)>,
    demand: usize,
    /// Bumped whenever demand changes, so a stale idle timer does nothing.
    idle_epoch: u64,
}

impl UpState {
    /// The source task exists and has not finished (a non-looping file ends by itself).
    fn alive(&self) -> bool {
        self.running.as_ref().is_some_and(|(_, t)| !t.is_finished())
    }
}

impl Upstream {
    fn state(&self) -> std::sync::MutexGuard<'_, UpState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_running(&self, st: &mut UpState) {
        if st.alive() {
            return;
        }
        let cancel = self.parent.child_token();
        let task = tokio::spawn(crate::source::supervise(
            self.source.clone(),
            Arc::clone(&self.hub),
            cancel.clone(),
        ));
        st.running = Some((cancel, task));
    }

    /// Whether the source task is running now.
    pub fn is_running(&self) -> bool {
        self.state().alive()
    }

    /// Registers a consumer; the upstream runs at least until the guard is dropped.
    pub fn acquire(self: &Arc<Self>) -> DemandGuard {
        let mut st = self.state();
        st.demand += 1;
        st.idle_epoch += 1;
        if self.on_demand {
            if !st.alive() {
                info!(stream = %self.hub.id, "on-demand upstream starting for a viewer");
            }
            self.ensure_running(&mut st);
        }
        DemandGuard(Arc::clone(self))
    }

    fn release(self: &Arc<Self>) {
        let mut st = self.state();
        st.demand = st.demand.saturating_sub(1);
        st.idle_epoch += 1;
        if !self.on_demand || st.demand > 0 {
            return;
        }
        let epoch = st.idle_epoch;
        let me = Arc::clone(self);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(me.idle).await;
            let mut st = me.state();
            if st.demand == 0 && st.idle_epoch == epoch {
                if let Some((cancel, _)) = st.running.take() {
                    info!(stream = %me.hub.id, idle_ms = me.idle.as_millis() as u64, "on-demand upstream stopped: no viewers");
                    cancel.cancel();
                }
            }
        });
    }

    /// Stops the source and waits for it (bounded).
    async fn stop(&self) {
        let running = self.state().running.take();
        if let Some((cancel, task)) = running {
            cancel.cancel();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                warn!(stream = %self.hub.id, "source did not stop within 10 s");
            }
        }
    }
}

/// Keeps an upstream wanted while it lives.
pub struct DemandGuard(Arc<Upstream>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A stream that exists.
struct Running {
    config: StreamConfig,
    /// Came from the configuration file (reload may stop or restart it), not from the API.
    from_config: bool,
    upstream: Arc<Upstream>,
    started_ms: i64,
    /// Its HLS window, if it has the `hls` output; the task feeding it ends with the stream.
    hls: Option<Arc<crate::hls::Store>>,
}

/// Process-wide state shared by every handler.
pub struct App {
    pub config: Config,
    pub hub: Hub,
    /// Streams in the order they were added.
    streams: Mutex<Vec<(Uuid, Running)>>,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
    /// The archive, once opened by [`serve`] (absent in tests that build an `App` by hand).
    archive: std::sync::OnceLock<Arc<crate::archive::Archive>>,
    /// What `/metrics` renders.
    pub metrics: crate::api::metrics::Metrics,
    /// Credential checks, when `[auth]` is on.
    authority: Option<crate::access::Authority>,
    /// `[[webhooks]]` (empty when none are configured).
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Serialises edits of the configuration file (`[api] persist`).
    persist_lock: tokio::sync::Mutex<()>,
    /// Both servers' connection counts (`[limits]`).
    pub server_stats: Arc<crate::api::server::ServerStats>,
}

/// A stream as the API shows it.
#[derive(Clone, Debug)]
pub struct StreamView {
    pub config: StreamConfig,
    pub hub: Arc<StreamHub>,
    /// The upstream (source task) is running.
    pub streaming: bool,
    pub started_ms: i64,
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
            shutdown,
            persist_lock: tokio::sync::Mutex::new(()),
            server_stats: Arc::default(),
            archive: std::sync::OnceLock::new(),
            metrics: crate::api::metrics::Metrics::new(),
            authority: config
                .auth
                .enabled
                .then(|| crate::access::Authority::new(&config.auth)),
            config,
        })
    }

    /// Credential checks, if `[auth]` is on.
    pub fn authority(&self) -> Option<&crate::access::Authority> {
        self.authority.as_ref()
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
            Arc::clone(&self.webhooks),
        )
        .await;
        let _ = self.archive.set(archive);
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, Vec<(Uuid, Running)>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts every configured stream.
    pub fn start_configured(self: &Arc<Self>) {
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
    pub fn start_configured_stream(self: &Arc<Self>, config: StreamConfig) -> bool {
        self.start(config, true)
    }

    /// Starts a stream unless one with the same id exists; returns whether it started.
    pub fn start_stream(self: &Arc<Self>, config: StreamConfig) -> bool {
        self.start(config, false)
    }

    fn start(self: &Arc<Self>, config: StreamConfig, from_config: bool) -> bool {
        let mut streams = self.streams();
        if streams.iter().any(|(id, _)| *id == config.id) {
            return false;
        }
        let hub = self.hub.get_or_create(config.id);
        let upstream = Arc::new(Upstream {
            source: config.source.clone(),
            hub,
            on_demand: config.on_demand,
            idle: self.config.idle(),
            parent: self.shutdown.clone(),
            state: Mutex::default(),
        });
        if !config.on_demand {
            upstream.ensure_running(&mut upstream.state());
        }
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
        if let Some(archive) = self.archive() {
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
            })
            .collect()
    }

    /// The hub of a stream that has the output `wanted` selects, with a guard that keeps its
    /// upstream running (starting an on-demand one), or the reason it cannot be served (sent to
    /// websocket clients as the close reason).
    pub fn acquire_output(
        &self,
        id: &Uuid,
        wanted: impl Fn(&Outputs) -> bool,
    ) -> Result<(Arc<StreamHub>, DemandGuard), &'static str> {
        let streams = self.streams();
        let Some((_, r)) = streams.iter().find(|(s, _)| s == id) else {
            return Err("Stream not found");
        };
        if !wanted(&r.config.outputs) {
            return Err("Stream does not have this output type");
        }
        Ok((Arc::clone(&r.upstream.hub), r.upstream.acquire()))
    }

    /// A stream's HLS window, with a guard that keeps its upstream running (an HLS request is
    /// viewer activity: it starts an on-demand upstream and re-arms its idle timer).
    pub fn hls(&self, id: &Uuid) -> Result<(Arc<crate::hls::Store>, DemandGuard), &'static str> {
        let streams = self.streams();
        let Some((_, r)) = streams.iter().find(|(s, _)| s == id) else {
            return Err("Stream not found");
        };
        let Some(store) = &r.hls else {
            return Err("Stream does not have this output type");
        };
        Ok((Arc::clone(store), r.upstream.acquire()))
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

/// The original's `[on_demand] health_check`: every `health_interval_ms`, probe the on-demand
/// streams that are idle (a running upstream is its own health signal), at most 8 probes at once
/// and 2 per camera, and record the result in the stream's health.
async fn health_monitor(app: Arc<App>) {
    const GLOBAL_PROBES: usize = 8;
    const PROBES_PER_HOST: usize = 2;
    let od = app.config.on_demand.clone();
    if !od.health_check {
        return;
    }
    let timeout = Duration::from_millis(od.health_timeout_ms as u64);
    let global = Arc::new(tokio::sync::Semaphore::new(GLOBAL_PROBES));
    let mut tick = tokio::time::interval(Duration::from_millis(od.health_interval_ms as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let idle: Vec<(SourceSpec, Arc<Upstream>)> = app
            .streams()
            .iter()
            .filter(|(_, r)| r.config.on_demand && !r.upstream.is_running())
            .map(|(_, r)| (r.config.source.clone(), Arc::clone(&r.upstream)))
            .collect();
        let mut per_host: std::collections::HashMap<String, Arc<tokio::sync::Semaphore>> =
            std::collections::HashMap::new();
        let mut sweep = tokio::task::JoinSet::new();
        for (source, up) in idle {
            let host = Arc::clone(
                per_host
                    .entry(crate::source::probe::host_key(&source))
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(PROBES_PER_HOST))),
            );
            let global = Arc::clone(&global);
            sweep.spawn(async move {
                let (Ok(_host), Ok(_global)) =
                    (host.acquire_owned().await, global.acquire_owned().await)
                else {
                    return;
                };
                if up.is_running() {
                    return;
                }
                let result = crate::source::probe::probe(&source, timeout).await;
                // A viewer may have started the upstream meanwhile: its frames decide then.
                if !up.is_running() {
                    up.hub.set_probed(result.map_err(|e| e.to_string()));
                }
            });
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = async { while sweep.join_next().await.is_some() {} } => {}
        }
    }
}

/// Addresses the servers are listening on.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub video: SocketAddr,
    pub api: Option<SocketAddr>,
}

/// Binds both listeners (the API only if enabled). Port 0 picks a free port.
pub async fn bind(config: &Config) -> std::io::Result<(TcpListener, Option<TcpListener>)> {
    let video = TcpListener::bind(config.video.bind_addr())
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("video server on {}: {e}", config.video.bind_addr()),
            )
        })?;
    let api = if config.api.enabled {
        Some(
            TcpListener::bind(config.api.bind_addr())
                .await
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("API server on {}: {e}", config.api.bind_addr()),
                    )
                })?,
        )
    } else {
        None
    };
    Ok((video, api))
}

/// Runs the gateway on bound listeners until `app.shutdown` is cancelled, then shuts down in
/// order: stop accepting, end websocket sessions, stop sources.
pub async fn serve(
    app: Arc<App>,
    video: TcpListener,
    api: Option<TcpListener>,
) -> std::io::Result<()> {
    app.open_archive().await;
    app.start_configured();
    tokio::spawn(health_monitor(Arc::clone(&app)));
    let video_router = crate::api::video_router(Arc::clone(&app));
    let mut servers = Vec::new();
    let token = app.shutdown.clone();
    // Media connections: no Nagle delay, and a send buffer of about a second of video so that a
    // slow viewer shows up as back-pressure (and is resynced) instead of as growing latency.
    fn media_socket(tcp: &tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(tcp).set_send_buffer_size(VIEWER_SEND_BUFFER);
    }
    let limits = app.config.limits;
    servers.push(tokio::spawn(crate::api::server::run(
        video,
        video_router,
        limits,
        Arc::clone(&app.server_stats),
        token.clone(),
        media_socket,
    )));
    if let Some(api) = api {
        let api_router = crate::api::api_router(Arc::clone(&app));
        servers.push(tokio::spawn(crate::api::server::run(
            api,
            api_router,
            limits,
            Arc::clone(&app.server_stats),
            token.clone(),
            |_| {},
        )));
    }
    token.cancelled().await;
    info!("shutting down: stopping streams");
    app.stop_all().await;
    if let Some(archive) = app.archive() {
        // Recorders close their files when their streams stop; wait for them.
        if tokio::time::timeout(Duration::from_secs(10), archive.shutdown())
            .await
            .is_err()
        {
            warn!("the archive did not finish within 10 s");
        }
    }
    for s in servers {
        match tokio::time::timeout(Duration::from_secs(5), s).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "server task failed"),
            Err(_) => warn!("a server did not stop within 5 s"),
        }
    }
    info!("stopped");
    Ok(())
}

/// Completes when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    info!("Server has captured signal");
}
