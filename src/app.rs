//! Wiring: the running streams, the two HTTP servers, and ordered shutdown.
//!
//! Belongs here: starting and stopping a stream's tasks (today its source; HLS and archive
//! consumers will join it), looking streams up for the outputs, binding listeners, and the
//! shutdown sequence. Does not belong here: request handling (`api`, `mse`), media work.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{Config, Outputs, StreamConfig};
use crate::hub::{Hub, Limits, StreamHub};

/// Kernel send buffer of each video-server connection, bytes.
const VIEWER_SEND_BUFFER: usize = 256 * 1024;

/// A stream that is running.
struct Running {
    config: StreamConfig,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    hub: Arc<StreamHub>,
    started_ms: i64,
}

/// Process-wide state shared by every handler.
pub struct App {
    pub config: Config,
    pub hub: Hub,
    /// Streams in the order they were added.
    streams: Mutex<Vec<(Uuid, Running)>>,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
}

/// A stream as the API shows it.
#[derive(Clone, Debug)]
pub struct StreamView {
    pub config: StreamConfig,
    pub hub: Arc<StreamHub>,
    pub started_ms: i64,
}

impl App {
    pub fn new(config: Config) -> Arc<App> {
        Arc::new(App {
            config,
            hub: Hub::new(Limits::default()),
            streams: Mutex::new(Vec::new()),
            shutdown: CancellationToken::new(),
        })
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, Vec<(Uuid, Running)>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts every configured stream.
    pub fn start_configured(self: &Arc<Self>) {
        for s in self.config.streams.clone() {
            self.start_stream(s);
        }
    }

    /// Starts a stream unless one with the same id exists; returns whether it started.
    pub fn start_stream(self: &Arc<Self>, config: StreamConfig) -> bool {
        let mut streams = self.streams();
        if streams.iter().any(|(id, _)| *id == config.id) {
            return false;
        }
        let hub = self.hub.get_or_create(config.id);
        let cancel = self.shutdown.child_token();
        let task = tokio::spawn(crate::source::supervise(
            config.source.clone(),
            Arc::clone(&hub),
            cancel.clone(),
        ));
        info!(stream = %config.id, url = %config.source.display_url(), "stream added");
        streams.push((
            config.id,
            Running {
                config,
                cancel,
                task,
                hub,
                started_ms: crate::media::unix_ms_now(),
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
        running.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(10), running.task)
            .await
            .is_err()
        {
            warn!(stream = %id, "source did not stop within 10 s");
        }
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
                hub: Arc::clone(&r.hub),
                started_ms: r.started_ms,
            })
            .collect()
    }

    /// The hub of a stream that has the output `wanted` selects, or the reason it cannot be
    /// served (sent to websocket clients as the close reason).
    pub fn stream_for_output(
        &self,
        id: &Uuid,
        wanted: impl Fn(&Outputs) -> bool,
    ) -> Result<Arc<StreamHub>, &'static str> {
        let streams = self.streams();
        let Some((_, r)) = streams.iter().find(|(s, _)| s == id) else {
            return Err("Stream not found");
        };
        if !wanted(&r.config.outputs) {
            return Err("Stream does not have this output type");
        }
        Ok(Arc::clone(&r.hub))
    }

    /// Stops every stream (for shutdown).
    pub async fn stop_all(&self) {
        let ids: Vec<Uuid> = self.streams().iter().map(|(id, _)| *id).collect();
        futures::future::join_all(ids.iter().map(|id| self.stop_stream(id))).await;
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
    app.start_configured();
    let video_router = crate::api::video_router(Arc::clone(&app));
    let mut servers = Vec::new();
    let token = app.shutdown.clone();
    // Media connections: no Nagle delay, and a send buffer of about a second of video so that a
    // slow viewer shows up as back-pressure (and is resynced) instead of as growing latency.
    let video = video.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(VIEWER_SEND_BUFFER);
    });
    servers.push(tokio::spawn(
        axum::serve(video, video_router)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future(),
    ));
    if let Some(api) = api {
        let api_router = crate::api::api_router(Arc::clone(&app));
        servers.push(tokio::spawn(
            axum::serve(api, api_router)
                .with_graceful_shutdown(token.clone().cancelled_owned())
                .into_future(),
        ));
    }
    token.cancelled().await;
    info!("shutting down: stopping streams");
    app.stop_all().await;
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
