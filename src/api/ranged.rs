//! Responses with an exact `Content-Length` and single `Range` requests: HLS segments and
//! archive files from shared byte chunks (no copy), clips from a stream read on demand.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;

/// A single `bytes=` range resolved against `len`: `Ok(None)` for none or one we ignore
/// (several ranges), `Err` for unsatisfiable.
/// A range that starts past the end.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

pub fn range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
        (Ok(s), Err(_)) if b.is_empty() => (s, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
        _ => return Ok(None),
    };
    if len == 0 || start >= len {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

/// A response from shared chunks with `headers` (content type, caching, …), honouring a
/// single byte range: 200, 206 with `Content-Range`, or 416.
pub fn response(
    chunks: Vec<Bytes>,
    request: &HeaderMap,
    headers: &[(HeaderName, HeaderValue)],
) -> Response {
    let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    lazy_response(len, request, headers, |skip, n| {
        Body::new(Chunks::new(chunks, skip, n))
    })
}

/// Like [`response`], for a body of `len` bytes made on demand: `body(skip, n)` gives the
/// `n` bytes from offset `skip` (the whole, or the requested range).
pub fn lazy_response(
    len: u64,
    request: &HeaderMap,
    headers: &[(HeaderName, HeaderValue)],
    body: impl FnOnce(u64, u64) -> Body,
) -> Response {
    let mut out = match range(request, len) {
        Err(Unsatisfiable) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response()
        }
        Ok(None) => body(0, len).into_response(),
        Ok(Some((start, end))) => (
            StatusCode::PARTIAL_CONTENT,
            [(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))],
            body(start, end + 1 - start),
        )
            .into_response(),
    };
    let h = out.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for (k, v) in headers {
        h.insert(k.clone(), v.clone());
    }
    out
}

/// A body made of shared chunks (no copy), with an exact length so it is sent with
/// `Content-Length`.
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    /// `len` bytes starting `skip` bytes into the concatenation of `chunks`.
    pub fn new(chunks: Vec<Bytes>, mut skip: u64, len: u64) -> Chunks {
        let mut out = VecDeque::with_capacity(chunks.len());
        let mut want = len;
        for mut c in chunks {
            if want == 0 {
                break;
            }
            let n = c.len() as u64;
            if skip >= n {
                skip -= n;
                continue;
            }
            c = c.slice(skip as usize..);
            skip = 0;
            if c.len() as u64 > want {
                c.truncate(want as usize);
            }
            want -= c.len() as u64;
            out.push_back(c);
        }
        Chunks {
            chunks: out,
            remaining: len - want,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.chunks.pop_front() {
            Some(c) => {
                self.remaining -= c.len() as u64;
                Poll::Ready(Some(Ok(http_body::Frame::data(c))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// A body of a known length read on demand from a stream, so it is sent with `Content-Length`
/// (a clip read from its archive files as the client takes it).
pub struct Streamed {
    remaining: u64,
    stream: Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>,
}

impl Streamed {
    /// `len`: what `stream` yields in all.
    pub fn new(
        len: u64,
        stream: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Streamed {
        Streamed {
            remaining: len,
            stream: Box::pin(stream),
        }
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(http_body::Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_length() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::RANGE, HeaderValue::from_str(v).expect("header"));
            m
        };
        assert_eq!(range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(range(&h("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(range(&h("bytes=4-"), 10), Ok(Some((4, 9))));
        assert_eq!(range(&h("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(range(&h("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(range(&h("bytes=10-"), 10), Err(Unsatisfiable));
        assert_eq!(range(&h("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(range(&h("items=0-1"), 10), Ok(None));
    }

    #[test]
    fn chunk_bodies_slice_across_chunks() {
        let chunks = vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defg"),
            Bytes::from_static(b"hi"),
        ];
        let c = Chunks::new(chunks.clone(), 2, 5);
        let got: Vec<u8> = c.chunks.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(got, b"cdefg");
        assert_eq!(c.remaining, 5);
        let all = Chunks::new(chunks, 0, 9);
        assert_eq!(all.chunks.len(), 3);
    }
}
