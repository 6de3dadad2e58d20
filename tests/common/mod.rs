//! Shared test harness: the real `video-server` binary, a real GStreamer RTSP camera, a
//! websocket MSE client, minimal HTTP, and ffprobe/ffmpeg as independent checkers.
//! Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod fake_camera;
pub mod relay;
pub mod s3_server;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub const STREAM_A: &str = "0742091c-19cd-4658-9b4f-5320da160f45";
pub const STREAM_B: &str = "566bfe72-1f85-4e7d-9c0a-424e6c3b29f3";
/// The demo clip's stream (`assets/demo.mp4`, 640×360 H.264 + AAC, 2 s GOP).
pub const DEMO: &str = "13bf3e5c-d537-4f10-98e8-9d0afca8b070";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
/// A port for a server a test starts in another process. It is taken below the kernel's
/// ephemeral range (32768–60999 on Debian): a port released by `bind(0)` is handed out again
/// as the source port of the next outgoing connection, so the child (whose RTSP client may
/// connect before its API listener binds) could lose it to its own socket. Random, and checked
/// free, so tests running in parallel processes rarely pick the same one.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Where the camera clips live; made once (under a lock, tests run in parallel).
pub fn media_dir() -> PathBuf {
    let dir = repo().join("target/test-media");
    let status = Command::new("flock")
        .arg(repo().join("target/test-media.lock"))
        .arg(repo().join("tests/camera/make-clips.sh"))
        .arg(&dir)
        .status()
        .expect("run make-clips.sh (needs flock and ffmpeg: scripts/test installs them)");
    assert!(status.success(), "make-clips.sh failed");
    dir
}

/// Camera authentication.
#[derive(Clone, Copy, Debug)]
pub enum Auth {
    None,
    Basic(&'static str, &'static str),
    Digest(&'static str, &'static str),
}

/// GStreamer's RTSP server with /h264, /h264aac and /h265, on 127.0.0.1.
pub struct Camera {
    child: Option<Child>,
    pub port: u16,
    auth: Auth,
}

impl Camera {
    pub fn start(auth: Auth) -> Camera {
        Self::start_on(free_port(), auth)
    }

    pub fn start_on(port: u16, auth: Auth) -> Camera {
        let media = media_dir();
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo().join("tests/camera/rtsp_camera.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--media")
            .arg(&media)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        match auth {
            Auth::None => {}
            Auth::Basic(u, p) => {
                cmd.args(["--user", u, "--password", p]);
            }
            Auth::Digest(u, p) => {
                cmd.args(["--user", u, "--password", p, "--digest"]);
            }
        }
        let mut child = cmd
            .spawn()
            .expect("start the GStreamer camera (python3-gst-1.0)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("camera did not become ready within 60 s (its stderr is above)");
        }
        Camera {
            child: Some(child),
            port,
            auth,
        }
    }

    pub fn url(&self, mount: &str) -> String {
        match self.auth {
            Auth::None => format!("rtsp://127.0.0.1:{}/{mount}", self.port),
            Auth::Basic(u, p) | Auth::Digest(u, p) => {
                format!("rtsp://{u}:{p}@127.0.0.1:{}/{mount}", self.port)
            }
        }
    }

    /// Power loss: SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Reboot: start again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let fresh = Camera::start_on(self.port, self.auth);
        *self = fresh;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The gateway binary with a generated config.
pub struct Gateway {
    child: Child,
    pub video: SocketAddr,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
}

impl Gateway {
    /// Starts with `[api]`/`[video]` on free ports and `extra` appended (streams, cors, …).
    pub async fn start(extra: &str) -> Gateway {
        Self::start_with_api("", extra).await
    }

    /// Like [`Gateway::start`], with more keys in `[api]` (e.g. `persist = true`).
    pub async fn start_with_api(api_extra: &str, extra: &str) -> Gateway {
        Self::start_on(api_extra, |_, _| extra.to_owned()).await
    }

    /// Like [`Gateway::start_with_api`], with the rest of the configuration made from the
    /// ports chosen (video, API): a fleet node advertises them.
    pub async fn start_on(api_extra: &str, extra: impl FnOnce(u16, u16) -> String) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let video_port = free_port();
        let api_port = free_port();
        let extra = extra(video_port, api_port);
        let conf = dir.path().join("conf.toml");
        let text = format!(
            "[api]\nenabled = true\nhost = \"127.0.0.1\"\nport = {api_port}\n{api_extra}\n\n[video]\nhost = \"127.0.0.1\"\nport = {video_port}\n\n{extra}\n"
        );
        std::fs::write(&conf, text).expect("write conf");
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_video-server"))
            .arg("--conf")
            .arg(&conf)
            .current_dir(repo())
            .env("RUST_LOG", "info,video_server=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start video-server");
        let gw = Gateway {
            child,
            video: SocketAddr::from(([127, 0, 0, 1], video_port)),
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            dir,
            conf,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http(gw.video, "GET", "/health", &[], b"").await {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start:\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        gw
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the gateway, kB.
    pub fn rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn ws_url(&self, stream: &str, extra: &str) -> String {
        format!("ws://{}/ws/live?stream_id={stream}{extra}", self.video)
    }

    /// Waits until `/status` says the stream is online.
    pub async fn wait_online(&self, stream: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let st = self.status().await;
            if st["streams"][stream]["online"] == true {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stream {stream} not online within {within:?}; status {st}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn status(&self) -> serde_json::Value {
        let r = http(self.api, "GET", "/status", &[], b"")
            .await
            .expect("status");
        serde_json::from_slice(&r.body).expect("status is JSON")
    }

    /// SIGKILL-free stop: SIGTERM, then wait (bounded).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL, as a crash: no shutdown runs; returns once the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it gives a value; panics naming `what` after `within`.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP request through reqwest (bounded to 10 s, no redirects followed, no connection
/// kept for later).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .map_err(std::io::Error::other)?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(std::io::Error::other)?;
    let mut req = client
        .request(method, format!("http://{addr}{path}"))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.map_err(std::io::Error::other)?;
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.bytes().await.map_err(std::io::Error::other)?.to_vec();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("websocket connect timed out")
    .expect("websocket connect");
    ws
}

/// What an MSE client received.
#[derive(Debug, Default)]
pub struct Capture {
    /// Each `0x09` message's codec list, in order.
    pub codecs: Vec<String>,
    /// Binary messages after the `0x09` ones: init segments and fragments, in order.
    pub media: Vec<Vec<u8>>,
    /// Text messages (events, pong).
    pub texts: Vec<String>,
    /// Close frame (code, reason), if any.
    pub close: Option<(u16, String)>,
    /// Time from the start of collection to the first fragment (after the init segment).
    pub first_fragment_after: Option<Duration>,
}

impl Capture {
    /// Number of `moof` messages.
    pub fn fragments(&self) -> usize {
        self.media.iter().filter(|m| is_box(m, b"moof")).count()
    }

    /// Writes everything (init segments and fragments) to a file for ffprobe.
    pub fn write(&self, path: &Path) {
        let all: Vec<u8> = self.media.iter().flatten().copied().collect();
        std::fs::write(path, all).expect("write capture");
    }
}

pub fn is_box(b: &[u8], kind: &[u8; 4]) -> bool {
    b.len() >= 8 && &b[4..8] == kind
}

/// Reads from `ws` until `want` fragments arrived, the socket closed, or `within` passed.
pub async fn collect(ws: &mut Ws, cap: &mut Capture, want: usize, within: Duration) {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    while cap.fragments() < want {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Binary(b) => {
                if b.first() == Some(&9) {
                    cap.codecs
                        .push(String::from_utf8_lossy(&b[1..]).into_owned());
                } else {
                    if is_box(&b, b"moof") && cap.first_fragment_after.is_none() {
                        cap.first_fragment_after = Some(start.elapsed());
                    }
                    cap.media.push(b.to_vec());
                }
            }
            Message::Text(t) => cap.texts.push(t.to_string()),
            Message::Close(c) => {
                cap.close = c.map(|c| (u16::from(c.code), c.reason.to_string()));
                return;
            }
            _ => {}
        }
    }
}

/// Sends a text message.
pub async fn ws_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send text");
}

/// `tfdt` and sample-flags of a fragment: (track id, base decode time, first sample is sync).
pub fn fragment_info(b: &[u8]) -> Option<(u32, u64, bool)> {
    use mp4_atom::Decode;
    let moof = mp4_atom::Moof::decode(&mut std::io::Cursor::new(b)).ok()?;
    let traf = moof.traf.first()?;
    let first = traf.trun.first()?.samples.iter().next()?;
    Some((
        traf.tfhd.track_id,
        traf.tfdt.as_ref()?.base_media_decode_time,
        first.flags? & 0x0001_0000 == 0,
    ))
}

/// Every video sample (track 1) of a capture's fragments as (decode time, composition offset,
/// sync), read back with mp4-atom.
pub fn video_samples(cap: &Capture) -> Vec<(u64, i64, bool)> {
    use mp4_atom::Decode;
    let mut out = Vec::new();
    for m in cap.media.iter().filter(|m| is_box(m, b"moof")) {
        let Ok(moof) = mp4_atom::Moof::decode(&mut std::io::Cursor::new(m)) else {
            continue;
        };
        for traf in moof.traf.iter().filter(|t| t.tfhd.track_id == 1) {
            let mut t = traf.tfdt.as_ref().map_or(0, |d| d.base_media_decode_time);
            for run in &traf.trun {
                for e in run.samples.iter() {
                    let sync = e.flags.is_some_and(|f| f & 0x0001_0000 == 0);
                    out.push((t, e.cts.unwrap_or(0), sync));
                    t += u64::from(e.duration.unwrap_or(0));
                }
            }
        }
    }
    out
}

/// ffmpeg reads `secs` seconds of a live HLS playlist at `url` (bounded to 60 s in all) and has
/// nothing to complain about; every frame is decoded as stamped. Panics with what it said.
pub async fn ffmpeg_reads_live_hls(url: String, secs: u32) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["60", "ffmpeg", "-v", "error", "-i", &url])
            .args(["-t", &secs.to_string(), "-fps_mode", "passthrough"])
            .args(["-enc_time_base", "-1", "-f", "null", "-"])
            .output()
            .expect("ffmpeg")
    })
    .await
    .expect("join");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "HLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What ffprobe counts in a file, and whether ffmpeg decodes it without a single error.
#[derive(Debug)]
pub struct Probe {
    pub video_codec: Option<String>,
    pub video_frames: u64,
    pub audio_codec: Option<String>,
    pub audio_frames: u64,
    pub decode_errors: String,
}

pub fn probe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut p = Probe {
        video_codec: None,
        video_frames: 0,
        audio_codec: None,
        audio_frames: 0,
        decode_errors: String::new(),
    };
    for s in v["streams"].as_array().cloned().unwrap_or_default() {
        let n = s["nb_read_frames"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let name = s["codec_name"].as_str().map(str::to_owned);
        match s["codec_type"].as_str() {
            Some("video") => {
                p.video_codec = name;
                p.video_frames = n;
            }
            Some("audio") => {
                p.audio_codec = name;
                p.audio_frames = n;
            }
            _ => {}
        }
    }
    let dec = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        // Every frame decoded as stamped: no conversion to the frame rate the SPS declares
        // (a camera that declares 25 fps and sends 60 is the camera's business, not a muxer's).
        .args([
            "-fps_mode",
            "passthrough",
            "-enc_time_base",
            "-1",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    p.decode_errors = String::from_utf8_lossy(&dec.stderr).into_owned();
    p
}

/// ESTABLISHED TCP connections to 127.0.0.1:`port`, from /proc/net/tcp (no tools needed).
pub fn connections_to(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!("0100007F:{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == want && f[3] == "01"
        })
        .count()
}

/// Runs a browser script of tests/browser (`<script> <url> <screenshot> <seconds>`, with
/// `env`) and returns the JSON line it prints last; screenshots go to target/test-artifacts/.
pub fn node_report(
    script: &str,
    url: &str,
    shot: &str,
    secs: u32,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let out = Command::new("node")
        .envs(env.iter().copied())
        .arg(repo().join("tests/browser").join(script))
        .arg(url)
        .arg(artifacts.join(shot))
        .arg(secs.to_string())
        .output()
        .expect("node (scripts/test installs it with playwright-core)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "no report from {script}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A stream entry for the generated config.
pub fn rtsp_stream(id: &str, url: &str, outputs: &str, extra: &str) -> String {
    format!(
        "[[rtsp_streams]]\nguid = \"{id}\"\nurl = \"{url}\"\noutput_types = [{outputs}]\n{extra}\n"
    )
}

/// A looped `local_files` entry playing the demo clip as [`DEMO`].
pub fn demo_stream(outputs: &str) -> String {
    format!(
        "[[local_files]]\nguid = \"{DEMO}\"\nfile = \"assets/demo.mp4\"\noutput_types = [{outputs}]\nloop = true\n"
    )
}

/// `GET` (bounded to 10 s); panics if the request fails.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    http(addr, "GET", path, &[], b"")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `/segments` with the file being written taken out (tests look at closed files).
pub async fn archive_segments(gw: &Gateway, id: &str) -> serde_json::Value {
    let mut v = http(gw.api, "GET", &format!("/archive/{id}/segments"), &[], b"")
        .await
        .expect("segments")
        .json();
    if let Some(list) = v["segments"].as_array_mut() {
        list.retain(|s| s["growing"] != true);
    }
    v
}

/// Waits until the stream has `n` closed segments (and, with `remote`, all of them uploaded).
pub async fn wait_archive_segments(
    gw: &Gateway,
    id: &str,
    n: usize,
    remote: bool,
    within: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let s = archive_segments(gw, id).await;
        let segs = s["segments"].as_array().cloned().unwrap_or_default();
        if segs.len() >= n && (!remote || segs.iter().all(|g| g["location"] == "remote")) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: wanted {n} segments (remote: {remote}) within {within:?}, have {s}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Wall-clock now, Unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A looped clip whose keyframes come at 0, 1, 2 and 7.5 s, as a "smart codec" camera sends
/// them when the scene goes still.
pub fn smart_codec_clip(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("camera.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=25:duration=10")
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "1000"])
        .args(["-sc_threshold", "0", "-force_key_frames", "0,1,2,7.5"])
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    out
}
