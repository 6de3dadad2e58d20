//! Serving and signals: binding both listeners, running the servers, SIGHUP (reload) and
//! SIGINT/SIGTERM (ordered shutdown).
//!
//! Belongs here: process-level start and stop. Does not belong here: routes (`api`), stream
//! lifecycle (`app`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use super::App;
use crate::config::Config;

/// Kernel send buffer of each video-server connection, bytes.
const VIEWER_SEND_BUFFER: usize = 256 * 1024;

/// Addresses the servers are listening on.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub video: SocketAddr,
    pub api: Option<SocketAddr>,
}

/// Connections a listener holds before they are accepted. The standard library's (and
/// tokio's) 128 is overflowed when a thousand players reconnect at once (a gateway restart
/// behind a dashboard wall): the kernel drops their SYNs and each one retries a second later.
/// Capped by the kernel at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` (a host name or address and a port) with [`LISTEN_BACKLOG`]; an error
/// names `what` and the address.
async fn listen(what: &str, addr: &str) -> std::io::Result<TcpListener> {
    let bound = async {
        let mut last = None;
        for a in tokio::net::lookup_host(addr).await? {
            let socket = if a.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            };
            let bound = socket.and_then(|s| {
                s.set_reuseaddr(true)?;
                s.bind(a)?;
                s.listen(LISTEN_BACKLOG)
            });
            match bound {
                Ok(l) => return Ok(l),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
        }))
    };
    bound
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{what} on {addr}: {e}")))
}

/// Binds both listeners (the API only if enabled). Port 0 picks a free port.
pub async fn bind(config: &Config) -> std::io::Result<(TcpListener, Option<TcpListener>)> {
    let video = listen("video server", &config.video.bind_addr()).await?;
    let api = if config.api.enabled {
        Some(listen("API server", &config.api.bind_addr()).await?)
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
    // In a fleet, the cluster decides which cameras run here (after the servers are up).
    let fleet = app.config.cluster.clone();
    if fleet.is_none() {
        app.start_configured();
    }
    tokio::spawn(super::health::monitor(Arc::clone(&app)));
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(Arc::clone(&app)));
    let ctx = crate::api::Ctx::new(
        Arc::clone(&app) as Arc<dyn crate::api::registry::Registry>,
        app.archive().cloned(),
        Arc::clone(&app.config),
        Arc::clone(&app.webhooks),
        app.shutdown.clone(),
    );
    // WebRTC's UDP socket is bound now when a stream has the output (a taken port is said at
    // start), else on the first offer (a stream added later).
    if app.config.streams.iter().any(|s| s.outputs.webrtc) {
        match ctx.webrtc.start().await {
            Ok(addr) => tracing::info!(udp = %addr, "WebRTC (WHEP): POST /whep/<stream id>"),
            Err(e) => tracing::error!(error = %e, "WebRTC output unavailable"),
        }
    }
    let video_router = crate::api::video_router(Arc::clone(&ctx));
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
        Arc::clone(&ctx.server_stats),
        token.clone(),
        media_socket,
    )));
    if let Some(api) = api {
        let api_router = crate::api::api_router(Arc::clone(&ctx));
        servers.push(tokio::spawn(crate::api::server::run(
            api,
            api_router,
            limits,
            Arc::clone(&ctx.server_stats),
            token.clone(),
            |_| {},
        )));
    }
    #[cfg(feature = "cluster")]
    let cluster_stop = tokio_util::sync::CancellationToken::new();
    #[cfg(feature = "cluster")]
    if let Some(cfg) = fleet {
        let local = Arc::clone(&app) as Arc<dyn crate::cluster::Local>;
        let joined = tokio::select! {
            j = crate::cluster::Cluster::join(cfg, local, cluster_stop.clone()) => j,
            _ = token.cancelled() => return Ok(()),
            _ = app.stop.cancelled() => {
                token.cancel();
                return Ok(());
            }
        };
        match joined {
            Ok(c) => {
                if let Some(a) = app.archive() {
                    a.join_fleet();
                }
                let _ = app.cluster.set(Arc::clone(&c));
                let _ = ctx.cluster.set(c);
            }
            Err(e) => {
                token.cancel();
                return Err(std::io::Error::other(e.to_string()));
            }
        }
    }
    #[cfg(not(feature = "cluster"))]
    let _ = fleet;
    tokio::select! {
        _ = app.stop.cancelled() => {}
        _ = token.cancelled() => {}
    }
    // A fleet node hands its cameras off first, while it still serves them (make before
    // break), then closes its viewers.
    #[cfg(feature = "cluster")]
    if let Some(c) = app.cluster.get() {
        c.leave().await;
        cluster_stop.cancel();
    }
    token.cancel();
    info!("shutting down: stopping streams");
    app.stop_all().await;
    if let Some(archive) = app.archive() {
        // Recorders close their files when their streams stop; wait for them.
        if tokio::time::timeout(Duration::from_secs(20), archive.shutdown())
            .await
            .is_err()
        {
            warn!("the archive did not finish within 20 s");
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

/// SIGHUP re-reads the configuration (as `POST /config/reload` does).
#[cfg(unix)]
async fn reload_on_sighup(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP: reload with POST /config/reload");
        return;
    };
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        info!("SIGHUP: reloading the configuration");
        if let Err(e) = super::reload::reload(&app).await {
            tracing::error!("reload refused, nothing changed: {e}");
        }
    }
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
