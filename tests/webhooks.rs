//! Webhooks against the real binary and a real camera: events arrive as JSON POSTs, a failed
//! delivery is retried, and the camera's death and return are announced.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{rtsp_stream, Auth, Camera, Gateway, STREAM_A};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP receiver: answers 500 to the first request and 200 after; keeps the bodies.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    requests: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0usize));
        let (b, r) = (Arc::clone(&bodies), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (b, r) = (Arc::clone(&b), Arc::clone(&r));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        buf.drain(..end + 4 + len);
                        let first = {
                            let mut n = r.lock().expect("lock");
                            *n += 1;
                            *n == 1
                        };
                        let status = if first {
                            "500 Internal Server Error"
                        } else {
                            "200 OK"
                        };
                        if !first {
                            if let Ok(v) = serde_json::from_slice(&body) {
                                b.lock().expect("lock").push(v);
                            }
                        }
                        let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver {
            port,
            bodies,
            requests,
        }
    }

    /// Waits for an event matching `pred`.
    async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(v) = self.bodies.lock().expect("lock").iter().find(|v| pred(v)) {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} event; got {:?}",
                self.bodies.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_announce_online_offline_and_closed_files_with_retries() {
    let rx = Receiver::start().await;
    let mut cam = Camera::start(Auth::None);
    let files = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(&format!(
        "[[webhooks]]\nurl = \"http://127.0.0.1:{}/hook\"\nevents = [\"stream_online\", \"stream_offline\", \"segment_closed\"]\n\
         [archive]\nrecording = true\ndirectory = \"{}\"\nms_per_file = 2000\n{}",
        rx.port,
        files.path().display(),
        rtsp_stream(
            STREAM_A,
            &cam.url("h264"),
            "\"mse\"",
            "archive = { recording = true, type = \"filesystem\", ms_per_file = 2000 }"
        )
    ))
    .await;
    // The first delivery got a 500: it was retried, so the online event still arrives.
    let online = rx
        .wait_for("stream_online", |v| v["event"] == "stream_online")
        .await;
    assert_eq!(online["stream_id"], STREAM_A);
    assert!(online["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let closed = rx
        .wait_for("segment_closed", |v| v["event"] == "segment_closed")
        .await;
    let file = closed["file"].as_str().expect("file");
    assert!(files.path().join(file).exists(), "{closed}");
    assert!(
        closed["duration_ms"].as_i64().unwrap_or(0) >= 1900,
        "{closed}"
    );
    cam.kill();
    let offline = rx
        .wait_for("stream_offline", |v| v["event"] == "stream_offline")
        .await;
    assert_eq!(offline["stream_id"], STREAM_A);
    cam.restart();
    let deadline = Instant::now() + Duration::from_secs(40);
    while rx
        .bodies
        .lock()
        .expect("lock")
        .iter()
        .filter(|v| v["event"] == "stream_online")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no second online event:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(*rx.requests.lock().expect("lock") >= 4);
    // Nothing was dropped, and /metrics says so.
    let metrics = common::get(gw.api, "/metrics").await.text();
    assert!(
        metrics.contains("video_server_webhook_events_dropped_total 0"),
        "{metrics}"
    );
    // Only the chosen events were sent.
    assert!(rx.bodies.lock().expect("lock").iter().all(|v| [
        "stream_online",
        "stream_offline",
        "segment_closed"
    ]
    .contains(&v["event"].as_str().unwrap_or(""))));
}
