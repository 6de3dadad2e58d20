//! `GET /hls/<file>`: the HTTP side of the `hls` output: playlists (with LL-HLS blocking reload and a bounded wait on a cold
//! start), init segments, segments and parts, from memory, with HTTP Range on media.
//!
//! A file name must start with a UUID (any version; a bad one is a 400 with the original's
//! `{"Error": …}` body) and then be one of the shapes in the module doc of `hls`; anything else
//! is a 404. Nothing here touches the file system, so no name can reach outside the store.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use uuid::Uuid;

use super::error::ApiError;
use super::Ctx;
use crate::hls::store::{Lookup, Media, Store, Window};

/// The longest any HLS request waits, under the original's 30 s write timeout.
const MAX_WAIT: Duration = Duration::from_secs(25);
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const INIT_TYPE: &str = "video/mp4";
const SEGMENT_TYPE: &str = "video/iso.segment";
/// Media never changes under a name (names carry a per-run token in the playlist).
const MEDIA_CACHE: &str = "public, max-age=60";

/// What a file name asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum FileKind {
    Playlist,
    Init(u32),
    Segment(u64),
    Part(u64, usize),
}

/// Splits `<uuid><rest>`; `Err` is the 400 text, `Ok(None)` an unknown shape (404).
pub fn parse_name(file: &str) -> Result<(Uuid, Option<FileKind>), String> {
    let (id, rest) = match file.get(..36) {
        Some(id) => (id, &file[36..]),
        None => (file, ""),
    };
    let id = Uuid::try_parse(id).map_err(|e| e.to_string())?;
    let digits = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let kind = if rest == ".m3u8" {
        Some(FileKind::Playlist)
    } else if let Some(k) = rest
        .strip_prefix("_init")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        digits(k)
            .and_then(|k| u32::try_from(k).ok())
            .map(FileKind::Init)
    } else if let Some(stem) = rest.strip_suffix(".m4s") {
        match stem.split_once('.') {
            None => digits(stem).map(FileKind::Segment),
            Some((msn, part)) => match (digits(msn), digits(part)) {
                (Some(m), Some(p)) => usize::try_from(p).ok().map(|p| FileKind::Part(m, p)),
                _ => None,
            },
        }
    } else {
        None
    };
    Ok((id, kind))
}

/// `_HLS_msn` and `_HLS_part` of a blocking playlist reload.
fn blocking_params(query: Option<&str>) -> Result<Option<(u64, Option<usize>)>, String> {
    let (mut msn, mut part) = (None, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "_HLS_msn" => msn = Some(v.parse::<u64>().map_err(|_| "bad _HLS_msn")?),
            "_HLS_part" => part = Some(v.parse::<usize>().map_err(|_| "bad _HLS_part")?),
            _ => {}
        }
    }
    match (msn, part) {
        (None, Some(_)) => Err("_HLS_part without _HLS_msn".into()),
        (None, None) => Ok(None),
        (Some(m), p) => Ok(Some((m, p))),
    }
}

pub async fn handler(
    State(ctx): State<Arc<Ctx>>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    token: Option<axum::Extension<super::guard::QueryToken>>,
    remote: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, kind) = parse_name(&file).map_err(ApiError::BadRequest)?;
    if let Some(owner) = ctx.streams.redirect(&id) {
        // Relative URIs in the playlist then resolve on the owner: the client stays there.
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let to = format!("{owner}/hls/{file}{query}");
        return Ok(axum::response::Redirect::temporary(&to).into_response());
    }
    let not_found = || ApiError::NotFound(format!("no such HLS file: {file}"));
    // Any request counts as a viewer: it starts an on-demand upstream and re-arms its timer.
    let (store, _demand) = ctx
        .streams
        .hls(&id)
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    store.touch();
    let Some(kind) = kind else {
        return Err(not_found());
    };
    let (target_s, part_target, low_latency) = {
        let w = store.lock();
        (w.target_s(), w.part_target(), w.low_latency())
    };
    let block = (Duration::from_secs(3 * target_s) + Duration::from_secs(1)).min(MAX_WAIT);
    let waiter = Waiter {
        store: &store,
        shutdown: &ctx.shutdown,
    };
    match kind {
        FileKind::Playlist => {
            let agent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            store.sessions.seen(
                crate::hls::sessions::client_key(remote.map(|r| r.0 .0.ip()), agent),
                crate::media::unix_ms_now(),
            );
            let blocking = if low_latency {
                blocking_params(query.as_deref()).map_err(ApiError::BadRequest)?
            } else {
                None
            };
            if let Some((msn, part)) = blocking {
                let last = store.lock().last_msn().unwrap_or(0);
                if msn > last + 2 {
                    return Err(ApiError::BadRequest(format!(
                        "_HLS_msn {msn} is more than two segments past the last ({last})"
                    )));
                }
                waiter
                    .wait_for(block, |w| w.has(msn, part).then_some(()))
                    .await;
            }
            // A cold stream: wait (bounded) for its first segment instead of a 404.
            let cold = (2 * Duration::from_secs(target_s)).clamp(Duration::from_secs(10), MAX_WAIT);
            let Some(body) = waiter
                .wait_for(cold, |w| w.ready().then(|| w.playlist()))
                .await
            else {
                return Err(ApiError::NotFound(format!(
                    "no HLS segment yet for stream {id}; retry shortly"
                )));
            };
            // A player that came with `?token=` gets it on every URI of the playlist.
            let body = match token {
                Some(axum::Extension(t)) => {
                    let text = String::from_utf8_lossy(&body).replace(
                        "?v=",
                        &format!("?token={}&v=", super::guard::encode_query_value(&t.0)),
                    );
                    bytes::Bytes::from(text)
                }
                None => body,
            };
            Ok((
                [
                    (header::CONTENT_TYPE, PLAYLIST_TYPE),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
                .into_response())
        }
        FileKind::Init(k) => {
            let init = store.lock().init(k).ok_or_else(not_found)?;
            Ok(media(vec![init], INIT_TYPE, &headers))
        }
        FileKind::Segment(msn) => {
            let found = waiter.wait_for(block, |w| w.segment(msn).settled()).await;
            media_found(found, &headers).await.ok_or_else(not_found)
        }
        FileKind::Part(msn, p) => {
            // The preload hint is answered as soon as the part exists.
            let budget = (block + part_target).min(MAX_WAIT);
            let found = waiter.wait_for(budget, |w| w.part(msn, p).settled()).await;
            media_found(found, &headers).await.ok_or_else(not_found)
        }
    }
}

/// The response for a segment or part the window had (`None`: a 404).
async fn media_found(found: Option<Lookup<Media>>, headers: &HeaderMap) -> Option<Response> {
    let Some(Lookup::Ready(found)) = found else {
        return None;
    };
    Some(media(
        crate::hls::read_media(found).await?,
        SEGMENT_TYPE,
        headers,
    ))
}

/// Waits on a stream's window for requests that may hold (blocking reload, preload hint, cold
/// start), ending early at shutdown.
struct Waiter<'a> {
    store: &'a Store,
    shutdown: &'a tokio_util::sync::CancellationToken,
}

impl Waiter<'_> {
    /// What `look` finds in the window, as soon as it finds something, within `budget`.
    async fn wait_for<T>(
        &self,
        budget: Duration,
        look: impl Fn(&mut Window) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.store.watch();
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            rx.borrow_and_update();
            if let Some(found) = look(&mut self.store.lock()) {
                return Some(found);
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, rx.changed()) => {
                    if !matches!(changed, Ok(Ok(()))) {
                        return None;
                    }
                }
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }
}

/// A media response from shared chunks, honouring a single byte range.
fn media(chunks: Vec<Bytes>, kind: &'static str, headers: &HeaderMap) -> Response {
    super::ranged::response(
        chunks,
        headers,
        &[
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static(MEDIA_CACHE)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0742091c-19cd-4658-9b4f-5320da160f45";

    #[test]
    fn names_parse_into_kinds() {
        let k = |s: &str| parse_name(&format!("{ID}{s}")).map(|(_, k)| k);
        assert_eq!(k(".m3u8"), Ok(Some(FileKind::Playlist)));
        assert_eq!(k("0007.m4s"), Ok(Some(FileKind::Segment(7))));
        assert_eq!(k("9999999.m4s"), Ok(Some(FileKind::Segment(9_999_999))));
        assert_eq!(k("0012.3.m4s"), Ok(Some(FileKind::Part(12, 3))));
        assert_eq!(k("_init2.mp4"), Ok(Some(FileKind::Init(2))));
        for junk in [
            "0000.ts",
            ".m4s",
            "x.m4s",
            "1.2.3.m4s",
            "/../x",
            "0001.m4s/",
            "_init.mp4",
            "00000000000000000001.m4s",
            ".M3U8",
            "0001.-1.m4s",
        ] {
            assert_eq!(k(junk), Ok(None), "{junk}");
        }
        // Any UUID version; a bad one is the 400 text.
        assert!(parse_name("00000000-0000-1000-8000-000000000000.m3u8").is_ok());
        assert!(parse_name("").is_err());
        assert!(parse_name("../../etc/passwd").is_err());
        assert!(parse_name("ééééééééééééééééééééééééééééééééééééé.m3u8").is_err());
    }

    #[test]
    fn blocking_params_parse() {
        assert_eq!(blocking_params(None), Ok(None));
        assert_eq!(blocking_params(Some("v=1")), Ok(None));
        assert_eq!(
            blocking_params(Some("_HLS_msn=5&_HLS_part=2")),
            Ok(Some((5, Some(2))))
        );
        assert_eq!(blocking_params(Some("_HLS_msn=5")), Ok(Some((5, None))));
        assert!(blocking_params(Some("_HLS_part=1")).is_err());
        assert!(blocking_params(Some("_HLS_msn=x")).is_err());
    }
}
