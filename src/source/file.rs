//! Local-file sources: an MP4 file played in real time as if it were a camera, optionally
//! looped with continuous timestamps. Demuxing is [`crate::mp4::movie`]'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Emitter, SourceError};
pub use crate::mp4::movie::Movie;

/// Plays a movie in real time through `emit`; loops forever when `looped`.
pub async fn play(movie: &Movie, looped: bool, emit: &mut Emitter<'_>) -> Result<(), SourceError> {
    if movie.samples.is_empty() {
        return Err(SourceError::File("the file has no samples".into()));
    }
    emit.set_params(Arc::clone(&movie.params));
    emit.audio_frame_len(movie.audio_frame_90k);
    let start = Instant::now();
    let mut pass_offset_90k = 0i64;
    loop {
        for s in &movie.samples {
            let t_90k = pass_offset_90k + s.dts_90k;
            let due = start + Duration::from_micros((t_90k.max(0) as u64) * 100 / 9);
            tokio::time::sleep_until(due).await;
            emit.frame(
                s.track,
                t_90k + i64::from(s.cto_90k),
                Some(s.cto_90k),
                s.is_key,
                movie.payload(s),
                std::time::Instant::now(),
            );
        }
        if !looped {
            return Ok(());
        }
        pass_offset_90k += movie.duration_90k.max(1);
    }
}
