//! Hot reload against the real binary: `POST /config/reload` and SIGHUP add, remove and
//! restart streams from the edited file while another stream's viewer keeps playing without a
//! break in its media timeline; a broken file changes nothing and says where it is broken.

mod common;

use std::time::{Duration, Instant};

use common::{
    collect, fragment_info, get, http, rtsp_stream, ws_connect, Auth, Camera, Capture, Gateway,
    DEMO, STREAM_A, STREAM_B,
};

async fn wait_listed(gw: &Gateway, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = get(gw.api, "/list").await.json();
        let mut ids: Vec<String> = list["data"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s["stream_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        w.sort();
        if ids == w {
            return;
        }
        assert!(Instant::now() < deadline, "listed {ids:?}, want {w:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_and_restarts_streams_while_others_play_on() {
    let cam = Camera::start(Auth::None);
    let a = rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "");
    let b = rtsp_stream(STREAM_B, &cam.url("h264aac"), "\"mse\"", "");
    let gw = Gateway::start(&format!("{a}{b}")).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;

    // A viewer of A, reading in the background for the whole test.
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let viewer = tokio::spawn(async move {
        let mut cap = Capture::default();
        collect(&mut ws, &mut cap, usize::MAX, Duration::from_secs(14)).await;
        cap
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The file loses B and gains the demo clip; A is untouched.
    let conf_text = std::fs::read_to_string(&gw.conf).expect("conf");
    let demo = common::demo_stream("\"mse\"");
    std::fs::write(&gw.conf, conf_text.replace(&b, &demo)).expect("edit conf");
    let r = http(gw.api, "POST", "/config/reload", &[], b"")
        .await
        .expect("reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    assert_eq!(report["added"], serde_json::json!([DEMO]), "{report}");
    assert_eq!(report["removed"], serde_json::json!([STREAM_B]), "{report}");
    assert_eq!(report["unchanged"], 1, "{report}");
    wait_listed(&gw, &[STREAM_A, DEMO]).await;
    gw.wait_online(DEMO, Duration::from_secs(20)).await;

    // SIGHUP: the demo stream's outputs change, so it restarts; a broken file changes nothing.
    let conf_text = std::fs::read_to_string(&gw.conf).expect("conf");
    std::fs::write(
        &gw.conf,
        conf_text.replace(&demo, &common::demo_stream("\"mse\", \"hls\"")),
    )
    .expect("edit conf");
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = get(gw.api, "/status").await.json();
        if st["streams"][DEMO]["supported_output_types"]
            .as_array()
            .is_some_and(|t| t.contains(&serde_json::json!(2)))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not restart the demo stream: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let good = std::fs::read_to_string(&gw.conf).expect("conf");
    std::fs::write(
        &gw.conf,
        format!("{good}\n[hls]\nms_per_segment = \"fast\"\n"),
    )
    .expect("break conf");
    let r = http(gw.api, "POST", "/config/reload", &[], b"")
        .await
        .expect("reload");
    assert_eq!(r.status, 400);
    let error = r.json()["Error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("ms_per_segment") && error.contains("conf.toml:"),
        "{error}"
    );
    wait_listed(&gw, &[STREAM_A, DEMO]).await;

    // A's viewer never noticed: no close, no new init, and a media timeline without a jump.
    let cap = viewer.await.expect("viewer");
    assert!(
        cap.close.is_none(),
        "A's viewer was closed: {:?}",
        cap.close
    );
    assert_eq!(cap.codecs.len(), 1, "A's viewer was re-initialised");
    let times: Vec<u64> = cap
        .media
        .iter()
        .filter_map(|m| fragment_info(m))
        .map(|(_, t, _)| t)
        .collect();
    assert!(times.len() > 250, "only {} fragments in 14 s", times.len());
    let steps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    assert!(
        steps.iter().all(|&d| d > 0 && d <= 2 * 3600),
        "A's timeline jumped: {:?}",
        steps
            .iter()
            .filter(|&&d| d == 0 || d > 2 * 3600)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_persist_writes_enabled_and_disabled_cameras_to_the_file() {
    let cam = Camera::start(Auth::None);
    let gw = Gateway::start_with_api(
        "persist = true # ours",
        &format!(
            "# my camera\n{}",
            rtsp_stream(STREAM_A, &cam.url("h264"), "\"mse\"", "")
        ),
    )
    .await;
    let before = std::fs::read_to_string(&gw.conf).expect("conf");
    let body =
        serde_json::json!({"guid": STREAM_B, "url": cam.url("h264aac"), "output_types": ["mse"]});
    let r = http(
        gw.api,
        "POST",
        "/enable_camera",
        &[],
        body.to_string().as_bytes(),
    )
    .await
    .expect("enable");
    assert_eq!(r.status, 200, "{}", r.text());
    gw.wait_online(STREAM_B, Duration::from_secs(20)).await;
    let after = std::fs::read_to_string(&gw.conf).expect("conf");
    assert!(
        after.starts_with(before.trim_end()),
        "the file was rewritten, not appended to"
    );
    assert!(after.contains(STREAM_B) && after.contains("# my camera") && after.contains("# ours"));
    let bak = std::fs::read_to_string(format!("{}.bak", gw.conf.display())).expect(".bak");
    assert_eq!(bak, before);
    // The file is valid and lists both; a reload sees nothing to do.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_video-server"))
        .args(["check", "--conf"])
        .arg(&gw.conf)
        .output()
        .expect("check");
    assert!(check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains(STREAM_B));
    let r = http(gw.api, "POST", "/config/reload", &[], b"")
        .await
        .expect("reload");
    assert_eq!(r.json()["unchanged"], 2, "{}", r.text());

    let body = serde_json::json!({"guid": STREAM_B});
    let r = http(
        gw.api,
        "POST",
        "/disable_camera",
        &[],
        body.to_string().as_bytes(),
    )
    .await
    .expect("disable");
    assert_eq!(r.status, 200);
    let after = std::fs::read_to_string(&gw.conf).expect("conf");
    assert_eq!(
        after.trim_end(),
        before.trim_end(),
        "disable_camera took the stream out again"
    );
    wait_listed(&gw, &[STREAM_A]).await;
}
