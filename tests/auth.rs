//! `[auth]` against the real binary: every route refuses without a credential, a token scoped
//! to one stream gets nothing of another, JWTs and signed clip links work until they expire and
//! only for what they say, websockets check `Origin`, and no secret reaches a log or a body.

mod common;

use std::time::{Duration, Instant};

use common::{
    collect, get, http, rtsp_stream, ws_connect, Auth, Camera, Capture, Gateway, STREAM_A, STREAM_B,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ADMIN: &str = "admin-token-0123456789";
const ONLY_A: &str = "live-a-token-0123456789";
const JWT_SECRET: &str = "jwt-secret-0123456789-0123456789-xyz";

fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

async fn get_with(addr: std::net::SocketAddr, path: &str, token: &str) -> common::Resp {
    let (k, v) = bearer(token);
    http(addr, "GET", path, &[(k, &v)], b"")
        .await
        .expect("request")
}

/// The HTTP status a websocket upgrade got (101 when it was accepted).
async fn ws_status(url: &str, origin: Option<&str>) -> u16 {
    let mut req = url.into_client_request().expect("request");
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", o.parse().expect("origin"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("websocket: {e}"),
    }
}

fn now_s() -> i64 {
    common::unix_ms() / 1000
}

/// A gateway with `[auth]` on (an admin token, a token for stream A's live view, a JWT secret),
/// streams A (recorded, 2 s files) and B; keep the camera and the directory while it runs.
async fn guarded() -> (Camera, tempfile::TempDir, Gateway) {
    let cam = Camera::start(Auth::None);
    let files = tempfile::tempdir().expect("tempdir");
    let conf = format!(
        "[auth]\nenabled = true\njwt_secret = \"{JWT_SECRET}\"\ntokens = [\n  {{ token = \"{ADMIN}\", streams = [\"*\"], actions = [\"live\", \"archive\", \"admin\", \"metrics\"] }},\n  {{ token = \"{ONLY_A}\", streams = [\"{STREAM_A}\"], actions = [\"live\"] }},\n]\n\
         [archive]\nrecording = true\ndirectory = \"{dir}\"\nms_per_file = 2000\n{a}{b}",
        dir = files.path().display(),
        a = rtsp_stream(
            STREAM_A,
            &cam.url("h264aac"),
            "\"mse\", \"hls\"",
            "archive = { recording = true, type = \"filesystem\", ms_per_file = 2000 }"
        ),
        b = rtsp_stream(STREAM_B, &cam.url("h264"), "\"mse\", \"hls\"", ""),
    );

    let gw = Gateway::start(&conf).await;
    (cam, files, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_credential_every_route_but_health_is_refused() {
    let (_cam, _files, gw) = guarded().await;
    // Without a credential: 401 everywhere but /health.
    for (addr, path) in [
        (gw.api, "/status".to_owned()),
        (gw.api, "/list".to_owned()),
        (gw.api, "/metrics".to_owned()),
        (gw.api, format!("/archive/{STREAM_A}/ranges")),
        (gw.video, "/".to_owned()),
        (gw.video, "/streams".to_owned()),
        (gw.video, format!("/hls/{STREAM_A}.m3u8")),
        (
            gw.video,
            format!("/archive/{STREAM_A}/clip.mp4?start=1&end=2"),
        ),
    ] {
        let r = get(addr, &path).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(get(gw.api, "/health").await.status, 200);
    let live_a = format!("ws://{}/ws/live?stream_id={STREAM_A}", gw.video);
    assert_eq!(ws_status(&live_a, None).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_plays_its_stream_and_nothing_else() {
    let (_cam, _files, gw) = guarded().await;
    let live_a = format!("ws://{}/ws/live?stream_id={STREAM_A}", gw.video);
    // A token for stream A's live view: A plays, B and everything else is refused.
    let mut ws = ws_connect(&format!("{live_a}&token={ONLY_A}")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 5, Duration::from_secs(20)).await;
    assert!(cap.fragments() >= 5, "stream A did not play with its token");
    let live_b = format!(
        "ws://{}/ws/live?stream_id={STREAM_B}&token={ONLY_A}",
        gw.video
    );
    assert_eq!(ws_status(&live_b, None).await, 403);
    assert_eq!(
        get_with(gw.video, &format!("/hls/{STREAM_B}.m3u8"), ONLY_A)
            .await
            .status,
        403
    );
    assert_eq!(get_with(gw.api, "/status", ONLY_A).await.status, 403);
    assert_eq!(
        get_with(gw.api, &format!("/archive/{STREAM_A}/ranges"), ONLY_A)
            .await
            .status,
        403
    );
    let listed = get_with(gw.video, "/streams", ONLY_A).await.json();
    let ids: Vec<&str> = listed["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["stream_id"].as_str())
        .collect();
    assert_eq!(ids, vec![STREAM_A], "a scoped token sees only its streams");
    // HLS with ?token=: the playlist passes it on to every URI, and they load.
    let pl = get(gw.video, &format!("/hls/{STREAM_A}.m3u8?token={ONLY_A}")).await;
    assert_eq!(pl.status, 200, "{}", pl.text());
    let text = pl.text();
    let seg = text
        .lines()
        .find(|l| l.contains(".m4s") && !l.starts_with('#'))
        .expect("a segment URI");
    assert!(seg.contains(&format!("token={ONLY_A}")), "{seg}");
    assert_eq!(get(gw.video, &format!("/hls/{seg}")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_from_a_foreign_origin_is_refused_even_with_a_token() {
    let (_cam, _files, gw) = guarded().await;
    // Websocket Origin: a foreign page cannot use a token it got hold of.
    assert_eq!(
        ws_status(
            &format!(
                "ws://{}/ws/live?stream_id={STREAM_A}&token={ONLY_A}",
                gw.video
            ),
            Some("http://evil.example")
        )
        .await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_carry_scoped_claims_and_expire() {
    let (_cam, _files, gw) = guarded().await;
    // JWT: scoped claims; an expired one is refused.
    let jwt = video_server::api::access::make_jwt(
        JWT_SECRET,
        &serde_json::json!({"sub": "grafana", "exp": now_s() + 60, "streams": ["*"], "actions": ["metrics"]}),
    );
    assert_eq!(get_with(gw.api, "/metrics", &jwt).await.status, 200);
    assert_eq!(get_with(gw.api, "/status", &jwt).await.status, 403);
    let old = video_server::api::access::make_jwt(
        JWT_SECRET,
        &serde_json::json!({"exp": now_s() - 1, "streams": ["*"], "actions": ["metrics"]}),
    );
    assert_eq!(get_with(gw.api, "/metrics", &old).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_clip_link_works_alone_for_its_window_until_it_expires() {
    let (_cam, _files, gw) = guarded().await;
    // A signed clip link: works alone, for its stream and window, until it expires.
    let (k, v) = bearer(ADMIN);
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = get_with(gw.api, &format!("/archive/{STREAM_A}/segments"), ADMIN)
            .await
            .json();
        let closed = s["segments"]
            .as_array()
            .map_or(0, |v| v.iter().filter(|g| g["growing"] != true).count());
        if closed >= 2 {
            break s;
        }
        assert!(Instant::now() < deadline, "no archive: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let first = s["segments"][0]["start_ms"].as_i64().expect("start");
    let body = serde_json::json!({"start": (first + 500) as f64 / 1000.0, "end": (first + 2500) as f64 / 1000.0, "expires_in": 4});
    let r = http(
        gw.api,
        "POST",
        &format!("/archive/{STREAM_A}/share"),
        &[(k, &v), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
    .expect("share");
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["url"].as_str().expect("url").to_owned();
    let issued = Instant::now();
    let clip = get(gw.video, &url).await;
    assert_eq!(clip.status, 200, "{}", clip.text());
    assert_eq!(clip.header("content-type"), Some("video/mp4"));
    let wider = url.replacen("&end=", "&end=9", 1);
    assert_eq!(get(gw.video, &wider).await.status, 401, "another window");
    let other = url.replace(STREAM_A, STREAM_B);
    assert_eq!(get(gw.video, &other).await.status, 401, "another stream");
    let live_with_sig = format!(
        "/hls/{STREAM_A}.m3u8?{}",
        url.split_once('?').expect("query").1
    );
    assert_eq!(get(gw.video, &live_with_sig).await.status, 401, "live view");
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(issued.elapsed())).await;
    assert_eq!(get(gw.video, &url).await.status, 401, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_the_api_or_check() {
    let (_cam, _files, gw) = guarded().await;
    assert_eq!(get(gw.api, "/status").await.status, 401);
    assert_eq!(get_with(gw.api, "/status", ONLY_A).await.status, 403);
    // No secret in what operators read.
    let status = get_with(gw.api, "/status", ADMIN).await.text();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_video-server"))
        .args(["check", "--conf"])
        .arg(&gw.conf)
        .output()
        .expect("check");
    let check = String::from_utf8_lossy(&check.stdout).into_owned();
    for secret in [ADMIN, ONLY_A, JWT_SECRET] {
        for (what, body) in [
            ("log", gw.log()),
            ("status", status.clone()),
            ("check", check.clone()),
        ] {
            assert!(!body.contains(secret), "a secret is in the {what}");
        }
    }
    assert!(gw.log().contains("refused"), "refusals are logged");
}

/// One request per documented route, as the OpenAPI document names it, with its path filled
/// in for stream A; `(method, path)`.
fn documented_requests(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            let filled = path
                .replace("{id}", STREAM_A)
                .replace("{file}", &format!("{STREAM_A}.m3u8"))
                .replace("{name}", &format!("{STREAM_A}_1700000000.mp4"))
                .replace("{segment}", "live")
                .replace("{player}", "mse");
            out.push((method.to_uppercase(), path.clone(), filled));
        }
    }
    out
}

/// The same route spelled as clients and attackers do: as documented, with a trailing slash,
/// a doubled slash, a percent-encoded letter and an extra segment.
fn spellings(path: &str) -> Vec<String> {
    let mut v = vec![path.to_owned()];
    if path != "/" {
        v.push(format!("{path}/"));
        v.push(format!("/{path}"));
        v.push(format!("{path}/extra"));
        if let Some(i) = path[1..].find(|c: char| c.is_ascii_lowercase()) {
            let i = i + 1;
            let c = path.as_bytes()[i];
            v.push(format!("{}%{:02X}{}", &path[..i], c, &path[i + 1..]));
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_documented_route_answers_without_a_credential_in_any_spelling() {
    const ONLY_B: &str = "everything-on-b-0123456789";
    let files = tempfile::tempdir().expect("tempdir");
    let conf = format!(
        "[auth]\nenabled = true\ntokens = [\n  {{ token = \"{ONLY_B}\", streams = [\"{STREAM_B}\"], actions = [\"live\", \"archive\", \"admin\", \"metrics\"] }},\n]\n\
         [archive]\nrecording = true\nserving = true\ndirectory = \"{dir}\"\nms_per_file = 2000\n{a}{b}",
        dir = files.path().display(),
        a = common::demo_stream("\"mse\", \"hls\"").replace(common::DEMO, STREAM_A),
        b = common::demo_stream("\"mse\"").replace(common::DEMO, STREAM_B),
    );
    let gw = Gateway::start(&conf).await;
    // The document itself is public; everything it lists but the public routes is not.
    let doc = get(gw.api, "/openapi.json").await.json();
    let public = [
        "/health",
        "/cluster/health",
        "/openapi.json",
        "/favicon.ico",
        "/players/{player}/{file}",
    ];
    let mut checked = 0;
    let mut forbidden = 0;
    for addr in [gw.api, gw.video] {
        for (method, route, path) in documented_requests(&doc) {
            for spelled in spellings(&path) {
                let as_documented = spelled == path;
                if public.contains(&route.as_str()) && as_documented {
                    continue;
                }
                let r = http(addr, &method, &spelled, &[], b"")
                    .await
                    .expect("request");
                assert_eq!(
                    r.status,
                    401,
                    "{method} {spelled} on {addr} without a credential: {}",
                    r.text()
                );
                // A token for everything on stream B gets nothing of stream A.
                let (k, v) = bearer(ONLY_B);
                let r = http(addr, &method, &spelled, &[(k, &v)], b"")
                    .await
                    .expect("request");
                let about_a = spelled.contains(STREAM_A)
                    || [
                        "/list",
                        "/status",
                        "/enable_camera",
                        "/disable_camera",
                        "/config/reload",
                        // Shows every stream: not for a credential scoped to some.
                        "/metrics",
                    ]
                    .contains(&route.as_str());
                if about_a && as_documented {
                    // 404: the route lives on the other server (the document covers both).
                    assert!(
                        matches!(r.status, 403 | 404),
                        "{method} {spelled} on {addr} with stream B's token: {} {}",
                        r.status,
                        r.text()
                    );
                    forbidden += usize::from(r.status == 403);
                } else if !as_documented {
                    // Another route or none: refused or not found, never served or failed.
                    assert!(
                        (400..500).contains(&r.status),
                        "{method} {spelled} on {addr} with stream B's token: {} {}",
                        r.status,
                        r.text()
                    );
                } else if r.status == 200 {
                    assert!(
                        !r.text().contains(STREAM_A),
                        "{method} {spelled} with stream B's token shows stream A"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 150, "{checked} requests checked");
    assert!(
        forbidden >= 20,
        "{forbidden} routes about stream A refused with 403"
    );
    // Refusals are logged with the remote address, never the credential.
    assert!(!gw.log().contains(ONLY_B));
}
