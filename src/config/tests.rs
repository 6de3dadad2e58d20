use std::path::Path;

use super::*;

fn load(text: &str, name: &str) -> Result<Config, ConfigError> {
    Config::from_str_at(text, Path::new(name))
}

const ORIGINAL_V06: &str = include_str!("../../tests/data/original-v0.6.toml");
const ORIGINAL_NEW: &str = include_str!("../../tests/data/original-new.toml");

#[test]
fn original_v06_example_loads_with_its_defaults() {
    let c = load(ORIGINAL_V06, "/etc/video.server/conf.toml").expect("loads");
    assert!(c.api.enabled);
    assert_eq!(c.api.port, 8091);
    assert_eq!(c.video.port, 8090);
    assert_eq!(c.hls.window_size, 5);
    assert!(
        c.archive.recording,
        "v0.6 `enabled` is an alias of `recording`"
    );
    assert!(c.warnings.iter().any(|w| w.contains("archive.enabled")));
    assert_eq!(c.streams.len(), 2);
    let a = c.streams[0].archive.as_ref().expect("archive");
    assert_eq!(a.kind, StorageKind::Filesystem);
    assert_eq!(a.directory, "custom_folder");
    assert_eq!(a.ms_per_file, 10_000);
    let b = c.streams[1].archive.as_ref().expect("archive");
    assert_eq!(b.kind, StorageKind::Minio);
    assert_eq!(b.minio_bucket, "vod-bucket");
    assert_eq!(b.minio_path, "/var/archive_data_custom");
    assert_eq!(c.streams[0].outputs.codes, vec![3]);
}

#[test]
fn original_new_example_loads() {
    let c = load(ORIGINAL_NEW, "conf.prod.toml").expect("loads");
    assert!(!c.archive.recording);
    assert!(c.archive.serving);
    assert_eq!(c.on_demand.idle_ms, 30_000);
    assert_eq!(c.streams.len(), 1);
    assert!(matches!(
        c.streams[0].source,
        SourceSpec::LocalFile { looped: true, .. }
    ));
    assert_eq!(c.streams[0].outputs.codes, vec![3, 2]);
}

#[test]
fn json_mirrors_toml() {
    let json = r#"{"api":{"enabled":true,"port":8091},"video":{"port":8090},
        "rtsp_streams":[{"guid":"0742091c-19cd-4658-9b4f-5320da160f45","url":"rtsp://u:p@cam/live","output_types":["mse","hls"]}]}"#;
    let c = load(json, "conf.json").expect("loads");
    assert_eq!(c.streams[0].outputs.codes, vec![3, 2]);
    assert_eq!(c.streams[0].source.display_url(), "rtsp://***@cam/live");
}

#[test]
fn typo_value_names_file_line_and_key() {
    let text = "[api]\nenabled = true\nport = \"80x1\"\n";
    let e = load(text, "my.conf.toml").expect_err("must fail");
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key, "api.port");
    let s = e.to_string();
    assert!(s.starts_with("my.conf.toml:3: key `api.port`"), "{s}");
}

#[test]
fn bad_output_type_is_an_error_with_the_original_text() {
    let text = "[[rtsp_streams]]\nguid = \"0742091c-19cd-4658-9b4f-5320da160f45\"\nurl = \"rtsp://x/y\"\noutput_types = [\"mse\", \"mes\"]\n";
    let e = load(text, "c.toml").expect_err("must fail");
    assert_eq!(e.key, "rtsp_streams[0].output_types");
    assert_eq!(e.line, Some(4));
    assert!(e
        .message
        .contains("stream type does not exists. Type: 'mes'"));
    let text = text.replace("\"mes\"", "\"rtsp\"");
    let e = load(&text, "c.toml").expect_err("must fail");
    assert!(e.message.contains("stream type is not supported"));
}

#[test]
fn json_type_error_has_line_and_key() {
    let json = "{\n  \"hls\": {\n    \"window_size\": \"five\"\n  }\n}";
    let e = load(json, "c.json").expect_err("must fail");
    assert_eq!(e.key, "hls.window_size");
    assert_eq!(e.line, Some(3));
}

#[test]
fn unknown_keys_warn() {
    let c = load("[api]\nenabeld = true\n[video]\nport = 1\n", "c.toml").expect("loads");
    assert!(
        c.warnings.iter().any(|w| w.contains("api.enabeld")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn unknown_extension_and_missing_file_fail_cleanly() {
    assert!(load("", "conf.yaml").is_err());
    let e = Config::load(Path::new("/nonexistent/conf.toml")).expect_err("missing");
    assert!(e.to_string().contains("/nonexistent/conf.toml"));
}

#[test]
fn ms_per_file_falls_back_to_30_seconds_not_30_ms() {
    let text = "[archive]\nrecording = true\n[[rtsp_streams]]\nguid = \"0742091c-19cd-4658-9b4f-5320da160f45\"\nurl = \"rtsp://x/y\"\noutput_types = []\narchive = { recording = true, type = \"filesystem\" }\n";
    let c = load(text, "c.toml").expect("loads");
    let a = c.streams[0].archive.as_ref().expect("archive");
    assert_eq!(a.ms_per_file, 30_000);
    assert_eq!(a.directory, "./mp4");
    assert!(!c.streams[0].on_demand);
}

#[test]
fn unsupported_archive_type_fails_only_when_storage_is_needed() {
    let base = "[[rtsp_streams]]\nguid = \"0742091c-19cd-4658-9b4f-5320da160f45\"\nurl = \"rtsp://x/y\"\noutput_types = []\narchive = { recording = true, type = \"ftp\" }\n";
    assert!(load(base, "c.toml").is_ok(), "global recording is off");
    let text = format!("[archive]\nrecording = true\n{base}");
    let e = load(&text, "c.toml").expect_err("must fail");
    assert_eq!(e.key, "rtsp_streams[0].archive.type");
    assert_eq!(e.line, Some(7));
}

#[test]
fn invalid_guid_skips_stream_with_a_warning() {
    let text =
        "[[rtsp_streams]]\nguid = \"not-a-uuid\"\nurl = \"rtsp://x/y\"\noutput_types = [\"mse\"]\n";
    let c = load(text, "c.toml").expect("loads");
    assert!(c.streams.is_empty());
    assert!(c.warnings.iter().any(|w| w.contains("c.toml:2")));
}

#[test]
fn cors_without_origins_or_schemes_is_an_error_not_a_panic() {
    assert!(load("[cors]\nenabled = true\n", "c.toml").is_err());
    let e = load(
        "[cors]\nenabled = true\nallow_origins = [\"example.com\"]\n",
        "c.toml",
    )
    .expect_err("scheme-less origin");
    assert_eq!(e.line, Some(3));
    let c = load(
        "[cors]\nenabled = true\nallow_origins = [\"*\"]\nallow_credentials = true\n",
        "c.toml",
    )
    .expect("loads");
    assert!(!c.cors.allow_credentials);
}

#[test]
fn masking_hides_credentials() {
    assert_eq!(
        mask_url("rtsp://admin:secret@10.0.0.1:554/s"),
        "rtsp://***@10.0.0.1:554/s"
    );
    assert_eq!(mask_url("rtsp://10.0.0.1/s"), "rtsp://10.0.0.1/s");
    assert!(!mask_url("rtsp://a:b@c d@e").contains('b'));
    let text = "[archive.minio_settings]\npassword = \"hunter22\"\n[[rtsp_streams]]\nguid = \"0742091c-19cd-4658-9b4f-5320da160f45\"\nurl = \"rtsp://u:hunter22@cam/x\"\noutput_types = [\"mse\"]\n";
    let c = load(text, "c.toml").expect("loads");
    let shown = serde_json::to_string(&c).expect("serializes");
    assert!(!shown.contains("hunter22"), "{shown}");
}

#[test]
fn keys_match_case_insensitively_like_the_original() {
    let json = r#"{"API":{"Enabled":true,"Port":8091},
        "rtsp_streams":[{"Guid":"0742091c-19cd-4658-9b4f-5320da160f45","URL":"rtsp://cam/x","Output_Types":["MSE","hls"]}]}"#;
    let c = load(json, "conf.json").expect("loads");
    assert!(c.api.enabled);
    assert_eq!(c.api.port, 8091);
    assert_eq!(c.streams.len(), 1);
    assert_eq!(c.streams[0].outputs.codes, vec![3, 2]);
    assert!(
        c.warnings.iter().any(|w| w.contains("case-insensitively")),
        "{:?}",
        c.warnings
    );
    let toml = "[Video]\nPort = 8090\n[[rtsp_streams]]\nGUID = \"0742091c-19cd-4658-9b4f-5320da160f45\"\nurl = \"rtsp://cam/x\"\noutput_types = [\"mse\"]\n";
    let c = load(toml, "conf.toml").expect("loads");
    assert_eq!(c.video.port, 8090);
    assert_eq!(c.streams.len(), 1);
    // Lower-case configs are untouched and get no such warning.
    let c = load(ORIGINAL_NEW, "conf.toml").expect("loads");
    assert!(!c.warnings.iter().any(|w| w.contains("case-insensitively")));
    // A key that is unknown in any case stays a warning.
    let c = load("[API]\nEnabeld = true\n", "c.toml").expect("loads");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("enabeld") || w.contains("Enabeld")),
        "{:?}",
        c.warnings
    );
}
