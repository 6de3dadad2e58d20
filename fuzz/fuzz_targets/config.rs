//! The config loader on arbitrary text: an error names what is wrong, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_server::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Config::from_str_at(text, std::path::Path::new("fuzz.toml")) {
            assert!(!e.to_string().is_empty());
        }
    }
});
