//! The accept loop of both HTTP servers, with the limits of `[limits]`: a cap on open
//! connections (one over it gets a 503 with a JSON reason and is closed), a cap on the size of a
//! request head, and a deadline for it (slowloris: a client that connects and sends nothing, or
//! dribbles its headers, is disconnected). Connections speak HTTP/1.1 (with websocket upgrades)
//! or HTTP/2, as axum's own server does.
//!
//! Belongs here: sockets and hyper's connection settings. Does not belong here: routes and what
//! they answer (`api::mod`), viewer caps (`mse`, checked before the upgrade).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::{debug, warn};

use crate::config::limits::LimitsConfig;

/// What the loop saw, for `/metrics`.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open now (both servers), each holding a place under `max_connections`.
    pub open_connections: AtomicU64,
    /// Connections refused because the server was at `max_connections`.
    pub refused_connections: AtomicU64,
    /// Websocket viewers (live and archive) now, against `max_viewers`.
    pub ws_viewers: AtomicU64,
    /// Websocket viewers refused by `max_viewers` or `max_viewers_per_stream`.
    pub refused_viewers: AtomicU64,
}

/// The server's end of a request's connection (the address the client reached): WebRTC
/// offers its host candidate there.
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub SocketAddr);

/// A viewer's place under `[limits]` (websocket or WebRTC): taken before the upgrade or the
/// answer, given back on drop however the session ends.
#[derive(Debug)]
pub struct ViewerSlot {
    stats: Arc<ServerStats>,
    /// The stream and its own count (`mse_viewers` or `webrtc_viewers`), for live viewers.
    stream: Option<(Arc<crate::hub::StreamHub>, ViewerKind)>,
}

/// Which per-stream count a live viewer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewerKind {
    Mse,
    Webrtc,
}

impl ViewerKind {
    fn count(self, st: &crate::hub::Stats) -> &std::sync::atomic::AtomicU64 {
        match self {
            ViewerKind::Mse => &st.mse_viewers,
            ViewerKind::Webrtc => &st.webrtc_viewers,
        }
    }
}

impl ViewerSlot {
    /// A place for one more websocket viewer (of `stream`, for live viewers), or why there
    /// is none.
    pub fn reserve(
        stats: &Arc<ServerStats>,
        limits: &LimitsConfig,
        stream: Option<&Arc<crate::hub::StreamHub>>,
    ) -> Result<ViewerSlot, &'static str> {
        Self::reserve_as(stats, limits, stream.map(|h| (h, ViewerKind::Mse)))
    }

    /// A place for one more live viewer of `kind`; the per-stream cap counts every kind.
    pub fn reserve_as(
        stats: &Arc<ServerStats>,
        limits: &LimitsConfig,
        stream: Option<(&Arc<crate::hub::StreamHub>, ViewerKind)>,
    ) -> Result<ViewerSlot, &'static str> {
        let refuse = |why| {
            stats.refused_viewers.fetch_add(1, Ordering::Relaxed);
            Err(why)
        };
        if stats.ws_viewers.fetch_add(1, Ordering::Relaxed) as usize >= limits.max_viewers {
            stats.ws_viewers.fetch_sub(1, Ordering::Relaxed);
            return refuse("too many viewers on this server");
        }
        if let Some((hub, kind)) = stream {
            let n = kind.count(&hub.stats).fetch_add(1, Ordering::Relaxed);
            let others = [ViewerKind::Mse, ViewerKind::Webrtc]
                .into_iter()
                .filter(|k| *k != kind)
                .map(|k| k.count(&hub.stats).load(Ordering::Relaxed))
                .sum::<u64>();
            if (n + others) as usize >= limits.max_viewers_per_stream {
                kind.count(&hub.stats).fetch_sub(1, Ordering::Relaxed);
                stats.ws_viewers.fetch_sub(1, Ordering::Relaxed);
                return refuse("too many viewers of this stream");
            }
        }
        Ok(ViewerSlot {
            stats: Arc::clone(stats),
            stream: stream.map(|(h, k)| (Arc::clone(h), k)),
        })
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.stats.ws_viewers.fetch_sub(1, Ordering::Relaxed);
        if let Some((hub, kind)) = &self.stream {
            kind.count(&hub.stats).fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The answer to a connection over the cap, written before closing it.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 47\r\nretry-after: 5\r\nconnection: close\r\n\r\n\
{\"error\":\"too many connections to this server\"}";

/// Serves `router` on `listener` until `shutdown`, then lets open requests finish for up to
/// 5 s. `tune` sets socket options on each accepted connection.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: LimitsConfig,
    stats: Arc<ServerStats>,
    shutdown: CancellationToken,
    tune: fn(&TcpStream),
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tune(&tcp);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            debug!(%remote, "refused: too many connections");
            tokio::spawn(refuse_busy(tcp));
            continue;
        };
        let place = Place::take(permit, &stats);
        let router = router.clone();
        let local = tcp.local_addr().ok().map(LocalAddr);
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            if let Some(local) = local {
                req.extensions_mut().insert(local);
            }
            let mut router = router.clone();
            async move { router.call(req).await }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            // hyper's header timeout starts with the request head; a client that sends nothing
            // at all would sit in HTTP version detection: it gets the same deadline.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, tcp.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                debug!(%remote, "closed: nothing sent within the header timeout");
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                debug!(%remote, error = %e, "connection ended");
            }
            drop(place);
        });
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        debug!("connections still open after 5 s");
    }
    Ok(())
}

/// A connection's place under `max_connections`, counted in `open_connections` until dropped
/// (however the connection ends).
struct Place {
    _permit: tokio::sync::OwnedSemaphorePermit,
    stats: Arc<ServerStats>,
}

impl Place {
    fn take(permit: tokio::sync::OwnedSemaphorePermit, stats: &Arc<ServerStats>) -> Place {
        stats.open_connections.fetch_add(1, Ordering::Relaxed);
        Place {
            _permit: permit,
            stats: Arc::clone(stats),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.stats.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells a client over the cap why, without reading its request, and closes.
async fn refuse_busy(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(BUSY).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert!(v["error"].is_string());
    }
}
