//! The route parsers on arbitrary text: HLS file names, archive times and file names, the part
//! files of crash repair, and the stream a request is about (auth).
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_server::config::auth::Action;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = video_server::api::hls::parse_name(text);
    let _ = video_server::api::archive::parse_time(text);
    let _ = video_server::archive::file::parse_part_name(text);
    let id = uuid::Uuid::nil();
    let _ = video_server::archive::index::parse_file_name(&id, text);
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    for action in [
        Action::Live,
        Action::Archive,
        Action::Admin,
        Action::Metrics,
    ] {
        let _ = video_server::api::guard::scope_of(action, path, query);
    }
});
