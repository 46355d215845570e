//! A fill in progress: the origin body as it arrives, shared by every viewer reading it.
//!
//! One task reads the origin body into a [`Fill`]; any number of [`FillReader`]s (the viewer
//! that missed and the followers that collapsed onto it) stream from it at their own pace.
//! While the object may still be stored, every chunk is kept; once it cannot be (too large),
//! chunks every reader has passed are released and the reading task waits for slow readers,
//! so memory stays bounded. A failed fill ends every reader with an error, never a clean end:
//! no viewer mistakes a truncated body for a complete one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use tokio::sync::Notify;

use crate::collapse::Audience;

/// How a fill ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Complete,
    Failed,
}

/// The error a reader sees when the origin body failed.
#[derive(Debug)]
pub(crate) struct FillFailed;

impl std::fmt::Display for FillFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("origin body failed before its end")
    }
}

impl std::error::Error for FillFailed {}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Bytes>,
    /// Absolute index of `chunks[0]`.
    base: usize,
    buffered: usize,
    end: Option<End>,
    wakers: Vec<Waker>,
    /// Position of every live reader, by slot.
    cursors: Vec<Option<usize>>,
    /// Storing mode: every chunk is kept so the whole body can be stored.
    keep_all: bool,
}

/// The shared state of one fill.
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) status: StatusCode,
    /// The fields viewers receive (the stored fields).
    pub(crate) headers: HeaderMap,
    /// The response's age when it arrived (RFC 9111 §4.2.3 `corrected_initial_age`).
    pub(crate) initial_age: u64,
    /// Which origin of a group answered, for the viewers' responses.
    pub(crate) origin: Option<crate::OriginUsed>,
    /// The requests that may read this fill besides the one that started it.
    pub(crate) audience: Audience,
    /// The same body compressed as it arrives, for viewers that prefer its coding.
    pub(crate) coded: Option<Arc<Fill>>,
    state: Mutex<State>,
    consumed: Notify,
    settled: Notify,
}

impl Fill {
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        initial_age: u64,
        origin: Option<crate::OriginUsed>,
        audience: Audience,
    ) -> Arc<Fill> {
        Self::with_coded(status, headers, initial_age, origin, audience, None)
    }

    /// A fill with a compressed twin, `coded`, that the filling task feeds alongside.
    pub(crate) fn with_coded(
        status: StatusCode,
        headers: HeaderMap,
        initial_age: u64,
        origin: Option<crate::OriginUsed>,
        audience: Audience,
        coded: Option<Arc<Fill>>,
    ) -> Arc<Fill> {
        Arc::new(Fill {
            status,
            headers,
            initial_age,
            origin,
            audience,
            coded,
            state: Mutex::new(State {
                keep_all: true,
                ..State::default()
            }),
            consumed: Notify::new(),
            settled: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a reader panicked; the state itself stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader from the first byte, or `None` once early chunks have been released.
    pub(crate) fn reader(self: &Arc<Self>) -> Option<FillReader> {
        let mut s = self.lock();
        if s.base > 0 {
            return None;
        }
        let slot = match s.cursors.iter().position(Option::is_none) {
            Some(i) => {
                s.cursors[i] = Some(0);
                i
            }
            None => {
                s.cursors.push(Some(0));
                s.cursors.len() - 1
            }
        };
        Some(FillReader {
            fill: self.clone(),
            slot,
        })
    }

    pub(crate) fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let wakers = {
            let mut s = self.lock();
            s.buffered += chunk.len();
            s.chunks.push_back(chunk);
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ends the fill. The first end stands: a fill that failed never ends complete later.
    pub(crate) fn finish(&self, end: End) {
        let wakers = {
            let mut s = self.lock();
            s.end.get_or_insert(end);
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
        self.settled.notify_waiters();
    }

    /// Stops keeping chunks for storage; from now on only readers' needs count.
    pub(crate) fn stop_keeping(&self) {
        let mut s = self.lock();
        s.keep_all = false;
        trim(&mut s);
        drop(s);
        self.settled.notify_waiters();
    }

    /// Waits until the fill has ended or stopped keeping chunks; the whole body if it was
    /// complete and kept.
    pub(crate) async fn settled(&self) -> Option<Bytes> {
        loop {
            let notified = self.settled.notified();
            {
                let s = self.lock();
                if s.end.is_some() || !s.keep_all {
                    break;
                }
            }
            notified.await;
        }
        self.body()
    }

    /// Bytes received so far and still held.
    pub(crate) fn buffered(&self) -> usize {
        self.lock().buffered
    }

    #[cfg(test)]
    pub(crate) fn readers(&self) -> usize {
        self.lock().cursors.iter().flatten().count()
    }

    /// Waits until readers have taken enough that at most `limit` bytes are held, or no
    /// reader is left. Returns the number of readers left.
    pub(crate) async fn wait_for_readers(&self, limit: usize) -> usize {
        loop {
            let notified = self.consumed.notified();
            {
                let s = self.lock();
                let readers = s.cursors.iter().flatten().count();
                if readers == 0 || s.buffered <= limit {
                    return readers;
                }
            }
            notified.await;
        }
    }

    /// The whole body, once complete in storing mode.
    pub(crate) fn body(&self) -> Option<Bytes> {
        if self.lock().end != Some(End::Complete) {
            return None;
        }
        self.kept_body()
    }

    /// Every chunk received so far as one body, in storing mode (the caller knows the
    /// origin body has ended).
    pub(crate) fn kept_body(&self) -> Option<Bytes> {
        let s = self.lock();
        if !s.keep_all || s.end == Some(End::Failed) {
            return None;
        }
        Some(match s.chunks.len() {
            0 => Bytes::new(),
            1 => s.chunks[0].clone(),
            _ => {
                let mut all = BytesMut::with_capacity(s.buffered);
                s.chunks.iter().for_each(|c| all.extend_from_slice(c));
                all.freeze()
            }
        })
    }
}

/// Releases chunks that every reader has passed (not in storing mode).
fn trim(s: &mut State) {
    if s.keep_all {
        return;
    }
    let min = s
        .cursors
        .iter()
        .flatten()
        .copied()
        .min()
        .unwrap_or(s.base + s.chunks.len());
    while s.base < min {
        match s.chunks.pop_front() {
            Some(c) => s.buffered -= c.len(),
            None => break,
        }
        s.base += 1;
    }
}

/// One viewer's position in a fill.
#[derive(Debug)]
pub(crate) struct FillReader {
    fill: Arc<Fill>,
    slot: usize,
}

impl FillReader {
    pub(crate) fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, FillFailed>>> {
        let mut s = self.fill.lock();
        let Some(pos) = s.cursors[self.slot] else {
            return Poll::Ready(None);
        };
        if pos < s.base + s.chunks.len() {
            let chunk = s.chunks[pos - s.base].clone();
            s.cursors[self.slot] = Some(pos + 1);
            if !s.keep_all {
                trim(&mut s);
                drop(s);
                self.fill.consumed.notify_one();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match s.end {
            Some(End::Complete) => Poll::Ready(None),
            Some(End::Failed) => Poll::Ready(Some(Err(FillFailed))),
            None => {
                s.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Bytes this reader has yet to receive, when the fill has ended complete. A failed
    /// fill has no known remainder: its reader ends with an error after its last chunk,
    /// never with a clean end a server could announce early (an end of stream after the
    /// last chunk, or a `Content-Length` for what was received).
    pub(crate) fn remaining_if_complete(&self) -> Option<u64> {
        let s = self.fill.lock();
        if s.end != Some(End::Complete) {
            return None;
        }
        let pos = s.cursors[self.slot]?;
        Some(
            s.chunks
                .iter()
                .skip(pos - s.base)
                .map(|c| c.len() as u64)
                .sum(),
        )
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        let mut s = self.fill.lock();
        s.cursors[self.slot] = None;
        trim(&mut s);
        drop(s);
        self.fill.consumed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    fn new_fill() -> Arc<Fill> {
        Fill::new(
            StatusCode::OK,
            HeaderMap::new(),
            0,
            None,
            Audience::everyone(),
        )
    }

    fn poll(r: &mut FillReader) -> Poll<Option<Result<Bytes, FillFailed>>> {
        let waker = Waker::noop();
        r.poll_chunk(&mut Context::from_waker(waker))
    }

    #[test]
    fn readers_joining_late_see_every_chunk() {
        let fill = new_fill();
        fill.push(Bytes::from_static(b"ab"));
        let mut late = fill.reader().unwrap();
        fill.push(Bytes::from_static(b"cd"));
        fill.finish(End::Complete);
        assert!(matches!(poll(&mut late), Poll::Ready(Some(Ok(c))) if c == "ab"));
        assert!(matches!(poll(&mut late), Poll::Ready(Some(Ok(c))) if c == "cd"));
        assert!(matches!(poll(&mut late), Poll::Ready(None)));
        assert_eq!(fill.body().unwrap(), "abcd");
    }

    #[test]
    fn failed_fill_ends_readers_with_an_error() {
        let fill = new_fill();
        let mut r = fill.reader().unwrap();
        fill.push(Bytes::from_static(b"ab"));
        fill.finish(End::Failed);
        assert!(matches!(poll(&mut r), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(poll(&mut r), Poll::Ready(Some(Err(FillFailed)))));
        assert!(fill.body().is_none());
    }

    #[test]
    fn a_failed_fill_never_reports_a_known_remainder() {
        // The reader took every chunk, then the origin body failed: nothing may tell the
        // server the body is over before the reader reports the failure.
        let fill = new_fill();
        let mut r = fill.reader().unwrap();
        fill.push(Bytes::from_static(b"ab"));
        assert!(matches!(poll(&mut r), Poll::Ready(Some(Ok(_)))));
        fill.finish(End::Failed);
        assert_eq!(r.remaining_if_complete(), None);
        assert!(matches!(poll(&mut r), Poll::Ready(Some(Err(FillFailed)))));
        // A reader that attaches after the failure knows no length either.
        let late = fill.reader().unwrap();
        assert_eq!(late.remaining_if_complete(), None);
    }

    #[test]
    fn a_failed_fill_stays_failed() {
        // A compressed twin that failed is finished again with its fill: still failed.
        let fill = new_fill();
        let mut r = fill.reader().unwrap();
        fill.push(Bytes::from_static(b"ab"));
        fill.finish(End::Failed);
        fill.finish(End::Complete);
        assert!(matches!(poll(&mut r), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(poll(&mut r), Poll::Ready(Some(Err(FillFailed)))));
        assert_eq!(r.remaining_if_complete(), None);
        assert!(fill.body().is_none());
    }

    #[test]
    fn a_complete_fill_reports_what_is_left() {
        let fill = new_fill();
        let mut r = fill.reader().unwrap();
        fill.push(Bytes::from_static(b"ab"));
        fill.push(Bytes::from_static(b"cde"));
        assert_eq!(r.remaining_if_complete(), None);
        fill.finish(End::Complete);
        assert_eq!(r.remaining_if_complete(), Some(5));
        let _ = poll(&mut r);
        assert_eq!(r.remaining_if_complete(), Some(3));
    }

    #[test]
    fn without_storage_consumed_chunks_are_released() {
        let fill = new_fill();
        let mut r = fill.reader().unwrap();
        fill.push(Bytes::from_static(b"ab"));
        fill.push(Bytes::from_static(b"cd"));
        fill.stop_keeping();
        assert_eq!(fill.buffered(), 4);
        let _ = poll(&mut r);
        assert_eq!(fill.buffered(), 2);
        assert!(
            fill.reader().is_none(),
            "a late reader cannot start mid-body"
        );
        drop(r);
        assert_eq!(fill.buffered(), 0);
        assert_eq!(fill.readers(), 0);
    }
}
