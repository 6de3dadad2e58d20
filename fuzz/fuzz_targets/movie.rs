//! The MP4 reader on arbitrary bytes: archive files and the original's files are untrusted
//! input. It must return an error or a movie whose every sample payload can be read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_server::mp4::movie::Movie;

fuzz_target!(|data: &[u8]| {
    if let Ok(movie) = Movie::parse(bytes::Bytes::copy_from_slice(data)) {
        let mut total = 0usize;
        for s in &movie.samples {
            total = total.wrapping_add(movie.payload(s).len());
        }
        std::hint::black_box(total);
    }
});
