//! Health probes for idle on-demand streams (the original's `[on_demand] health_check`): is the
//! camera there, without streaming from it?
//!
//! An RTSP probe is a DESCRIBE (`rtsp::probe`) (so Basic and Digest auth work as for sessions),
//! bounded by a timeout; it succeeds when the SDP offers video. There is no SETUP or PLAY, and
//! the connection closes when the probe ends. A local file only has to exist.

use std::time::Duration;

use super::SourceError;
use crate::config::SourceSpec;

/// Probes a source once.
pub async fn probe(source: &SourceSpec, timeout: Duration) -> Result<(), SourceError> {
    match source {
        SourceSpec::LocalFile { file, .. } => tokio::fs::metadata(file)
            .await
            .map(|_| ())
            .map_err(|e| SourceError::File(format!("{}: {e}", file.display()))),
        SourceSpec::Rtsp { url, .. } => {
            if url.is_empty() {
                return Err(SourceError::BadUrl("empty".into()));
            }
            super::rtsp::probe(url, timeout).await
        }
        // The owner node probes the camera; the follower has nothing to ask.
        SourceSpec::Peer { .. } => Ok(()),
    }
}

/// `host:port` of a source, for per-camera probe limits.
pub fn host_key(source: &SourceSpec) -> String {
    match source {
        SourceSpec::Rtsp { url, .. } => url::Url::parse(url)
            .ok()
            .map(|u| format!("{}:{}", u.host_str().unwrap_or(""), u.port().unwrap_or(554)))
            .unwrap_or_default(),
        SourceSpec::LocalFile { .. } => "local".into(),
        SourceSpec::Peer { node, .. } => format!("node:{node}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Transport;

    #[test]
    fn host_key_defaults_to_the_rtsp_port() {
        let s = |u: &str| SourceSpec::Rtsp {
            url: u.into(),
            transport: Transport::Tcp,
        };
        assert_eq!(host_key(&s("rtsp://u:p@10.0.0.5/live")), "10.0.0.5:554");
        assert_eq!(host_key(&s("rtsp://10.0.0.5:8554/a")), "10.0.0.5:8554");
    }

    #[tokio::test]
    async fn missing_file_and_refused_camera_fail_cleanly() {
        let f = SourceSpec::LocalFile {
            file: "/nonexistent/x.mp4".into(),
            looped: true,
        };
        assert!(probe(&f, Duration::from_secs(1)).await.is_err());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let r = SourceSpec::Rtsp {
            url: format!("rtsp://127.0.0.1:{port}/x"),
            transport: Transport::Tcp,
        };
        assert!(probe(&r, Duration::from_secs(2)).await.is_err());
    }
}
