//! The websocket text commands of `/ws/archive` (`ping`, `more`, seeks as JSON) on arbitrary
//! text: a seek is never before 1970 or past the year 3000.
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_server::archive::ws::{parse_command, Command};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Command::Seek(ms) = parse_command(text) {
            assert!((0..=32_503_680_000_000).contains(&ms));
        }
    }
});
