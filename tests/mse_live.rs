//! Live MSE against a real RTSP camera (GStreamer's server): what a browser would receive is
//! checked with an independent parser (ffprobe/ffmpeg on the concatenated messages).

mod common;

use std::time::Duration;

use common::*;

/// A GStreamer camera and a gateway with one stream on `mount`, online.
async fn camera_and_gateway(auth: Auth, mount: &str, extra: &str) -> (Camera, Gateway) {
    let cam = Camera::start(auth);
    let gw = Gateway::start(&rtsp_stream(STREAM_A, &cam.url(mount), "\"mse\"", extra)).await;
    gw.wait_online(STREAM_A, Duration::from_secs(20)).await;
    (cam, gw)
}

/// Connects a viewer, collects `n` fragments and checks the protocol's shape.
async fn watch(gw: &Gateway, stream: &str, extra: &str, n: usize) -> Capture {
    let mut ws = ws_connect(&gw.ws_url(stream, extra)).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, n, Duration::from_secs(30)).await;
    assert!(
        cap.fragments() >= n,
        "got {} fragments (close {:?}); log:\n{}",
        cap.fragments(),
        cap.close,
        gw.log()
    );
    assert!(
        is_box(&cap.media[0], b"ftyp"),
        "init segment right after the codec message"
    );
    let (_, tfdt, sync) = fragment_info(&cap.media[1]).expect("first fragment parses");
    assert_eq!(tfdt, 0, "each viewer's timeline starts at 0");
    assert!(sync, "the first fragment is a keyframe");
    cap
}

fn decode(cap: &Capture, name: &str) -> Probe {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    cap.write(&path);
    let p = probe(&path);
    assert!(
        p.decode_errors.is_empty(),
        "ffmpeg decode errors: {}",
        p.decode_errors
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_camera_over_mse_decodes_in_ffmpeg() {
    let (_cam, gw) = camera_and_gateway(Auth::None, "h264", "").await;
    let cap = watch(&gw, STREAM_A, "", 75).await;
    assert_eq!(cap.codecs.len(), 1);
    assert!(
        cap.codecs[0].starts_with("avc1.64"),
        "codecs {:?}",
        cap.codecs
    );
    let p = decode(&cap, "h264.mp4");
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    let st = gw.status().await;
    let v = &st["streams"][STREAM_A]["codecs"][0];
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert_eq!(v["fps"].as_f64(), Some(25.0), "{v}");
    // The gateway measures its own added latency for every batch it sends (the figure itself
    // is reported by scripts/bench, not asserted here).
    let d = &st["streams"][STREAM_A]["mse_send_delay"];
    assert!(d["count"].as_u64() > Some(10), "{d}");
    assert!(
        d["p99_ms_at_most"].is_number() || d["p99_ms_at_most"].is_null(),
        "{d}"
    );
    assert!(p.video_frames >= 75, "{p:?}");
    eprintln!(
        "first fragment {:?} after the upgrade (GOP cache)",
        cap.first_fragment_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_with_aac_forwards_audio() {
    let (_cam, gw) = camera_and_gateway(Auth::None, "h264aac", "").await;
    let cap = watch(&gw, STREAM_A, "", 150).await;
    assert!(
        cap.codecs[0].contains(",mp4a.40.2"),
        "codecs {:?}",
        cap.codecs
    );
    let p = decode(&cap, "h264aac.mp4");
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!(p.audio_frames > 20 && p.video_frames > 20, "{p:?}");
    let tracks: std::collections::HashSet<u32> = cap
        .media
        .iter()
        .filter_map(|m| fragment_info(m))
        .map(|f| f.0)
        .collect();
    assert_eq!(tracks.len(), 2, "fragments of both tracks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_camera_gets_hvc1() {
    let (_cam, gw) = camera_and_gateway(Auth::None, "h265", "").await;
    let cap = watch(&gw, STREAM_A, "", 50).await;
    assert!(
        cap.codecs[0].starts_with("hvc1."),
        "codecs {:?}",
        cap.codecs
    );
    let p = decode(&cap, "h265.mp4");
    assert_eq!(p.video_codec.as_deref(), Some("hevc"));
    assert!(p.video_frames >= 50, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_transport_and_digest_auth_work_and_passwords_stay_hidden() {
    let (_cam, gw) = camera_and_gateway(
        Auth::Digest("viewer", "s3cret-digest"),
        "h264",
        "transport = \"udp\"",
    )
    .await;
    let cap = watch(&gw, STREAM_A, "", 30).await;
    decode(&cap, "udp.mp4");
    let status = gw.status().await.to_string();
    assert!(!status.contains("s3cret-digest"), "{status}");
    assert!(status.contains("rtsp://***@127.0.0.1"), "{status}");
    assert!(!gw.log().contains("s3cret-digest"), "password in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_camera() {
    let (_cam, gw) = camera_and_gateway(Auth::Basic("admin", "basic-pass-1"), "h264", "").await;
    watch(&gw, STREAM_A, "", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_viewer_starts_from_the_gop_cache_and_catches_up() {
    let (_cam, gw) = camera_and_gateway(Auth::None, "h264", "").await;
    // Join once the GOP cache holds a second of video.
    wait_for(
        Duration::from_secs(20),
        "a second of video in the GOP cache",
        || async {
            let st = gw.status().await;
            (st["streams"][STREAM_A]["buffered_frames"].as_u64() >= Some(25)).then_some(())
        },
    )
    .await;
    let cap = watch(&gw, STREAM_A, "", 20).await;
    let infos: Vec<(u32, u64, bool)> = cap.media.iter().filter_map(|m| fragment_info(m)).collect();
    // Cached frames arrive at once with 1-tick spacing: the viewer does not wait for a new
    // keyframe and its playhead lands at the live edge.
    assert!(infos.len() >= 3);
    assert_eq!(
        infos[1].1, 1,
        "cached frames are compressed to 1 tick each: {infos:?}"
    );
    assert!(!infos[1].2);
    // Without catch-up the cache plays in real time.
    let cap = watch(&gw, STREAM_A, "&catchup=0", 3).await;
    let infos: Vec<(u32, u64, bool)> = cap.media.iter().filter_map(|m| fragment_info(m)).collect();
    assert!(
        infos[1].1 > 1000,
        "real spacing (about 3600 ticks), not 1 tick: {infos:?}"
    );
    eprintln!(
        "first fragment {:?} after the upgrade",
        cap.first_fragment_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_stay_monotonic_when_a_second_client_joins_the_camera() {
    // GStreamer's shared media restarts its RTP timestamps for existing clients when a second
    // client joins; the gateway must turn that into a discontinuity, never a step back.
    let (cam, gw) = camera_and_gateway(Auth::None, "h264", "").await;
    let mut ws = ws_connect(&gw.ws_url(STREAM_A, "")).await;
    let mut cap = Capture::default();
    collect(&mut ws, &mut cap, 25, Duration::from_secs(20)).await;
    let other = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            &cam.url("h264"),
            "-t",
            "2",
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ])
        .spawn()
        .expect("ffmpeg as a second client");
    collect(&mut ws, &mut cap, 125, Duration::from_secs(30)).await;
    let mut other = other;
    let _ = other.wait();
    let times: Vec<u64> = cap
        .media
        .iter()
        .filter_map(|m| fragment_info(m))
        .map(|f| f.1)
        .collect();
    assert!(times.len() >= 120, "{} fragments", times.len());
    for w in times.windows(2) {
        assert!(w[1] > w[0], "decode time went from {} to {}", w[0], w[1]);
    }
    decode(&cap, "second-client.mp4");
    let st = gw.status().await;
    eprintln!(
        "discontinuities seen: {}",
        st["streams"][STREAM_A]["discontinuities"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g711_audio_is_repackaged_as_flac_that_decodes_to_the_cameras_tone() {
    // The camera sends H.264 + G.711 A-law: a 300 Hz tone at 8 kHz.
    let (_cam, gw) = camera_and_gateway(Auth::None, "h264pcma", "").await;
    let cap = watch(&gw, STREAM_A, "", 100).await;
    assert!(
        cap.codecs[0].starts_with("avc1.") && cap.codecs[0].ends_with(",flac"),
        "codecs {:?}",
        cap.codecs
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pcma.mp4");
    cap.write(&path);
    let p = decode(&cap, "pcma.mp4");
    assert_eq!(p.audio_codec.as_deref(), Some("flac"));
    // The camera sends about 1400 samples (175 ms) per packet: one FLAC frame each.
    assert!(p.audio_frames >= 8, "{} audio frames", p.audio_frames);
    // Decoded by ffmpeg, the audio is the camera's tone: 8 kHz mono, about 600 zero crossings
    // a second, at the level the clip was made with (lavfi's sine: amplitude 1/8).
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-map", "0:a", "-f", "s16le", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pcm: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let secs = pcm.len() as f64 / 8000.0;
    assert!(secs >= 1.5, "{secs} s of audio");
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64;
    let per_s = crossings / secs;
    assert!((540.0..=660.0).contains(&per_s), "{per_s} zero crossings/s");
    let rms = (pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    let expected = 32768.0 / 8.0 / 2f64.sqrt();
    assert!(
        (rms / expected - 1.0).abs() < 0.2,
        "RMS {rms}, expected about {expected}"
    );
    assert!(!gw.log().contains("unsupported track ignored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_eight_viewers_of_one_camera_each_get_an_unbroken_stream() {
    // Past 32 caught-up viewers a stream's writers share them out over both workers: every
    // viewer must still get every fragment, in order, decodable.
    let (_cam, gw) = camera_and_gateway(Auth::None, "h264", "").await;
    let viewers = (0..48).map(|_| {
        let url = gw.ws_url(STREAM_A, "");
        tokio::spawn(async move {
            let mut ws = ws_connect(&url).await;
            let mut cap = Capture::default();
            collect(&mut ws, &mut cap, 100, Duration::from_secs(30)).await;
            cap
        })
    });
    let caps: Vec<Capture> = futures::future::join_all(viewers)
        .await
        .into_iter()
        .map(|r| r.expect("viewer task"))
        .collect();
    for (i, cap) in caps.iter().enumerate() {
        assert!(
            cap.fragments() >= 100,
            "viewer {i}: {} fragments (close {:?})",
            cap.fragments(),
            cap.close
        );
        // Read back with mp4-atom: the sequence numbers have no gap and the decode times
        // only go forward.
        use mp4_atom::Decode;
        let moofs: Vec<mp4_atom::Moof> = cap
            .media
            .iter()
            .filter(|m| is_box(m, b"moof"))
            .map(|m| mp4_atom::Moof::decode(&mut std::io::Cursor::new(m)).expect("moof parses"))
            .collect();
        for w in moofs.windows(2) {
            assert_eq!(
                w[1].mfhd.sequence_number,
                w[0].mfhd.sequence_number + 1,
                "viewer {i}: a fragment is missing"
            );
        }
        let times: Vec<u64> = video_samples(cap).iter().map(|s| s.0).collect();
        for w in times.windows(2) {
            assert!(
                w[1] > w[0],
                "viewer {i}: decode time {} then {}",
                w[0],
                w[1]
            );
        }
    }
    decode(&caps[0], "first.mp4");
    decode(&caps[47], "last.mp4");
    let st = gw.status().await;
    assert_eq!(
        st["streams"][STREAM_A]["frames_dropped_for_slow_viewers"].as_u64(),
        Some(0),
        "no viewer fell behind"
    );
}
