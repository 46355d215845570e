//! The response body: stored bytes, a fill being streamed, or the origin's own body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::fill::FillReader;
use crate::BoxError;

pin_project! {
    /// The body of every response from [`CdnService`](crate::CdnService).
    ///
    /// A hit is one shared [`Bytes`] (no copy); a miss streams the origin body as it arrives,
    /// shared with every viewer that collapsed onto it; a pass-through is the origin's body.
    pub struct CdnBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Empty,
        Full { data: Option<Bytes> },
        Parts { parts: VecDeque<Bytes> },
        Fill { reader: FillReader },
        Origin { #[pin] body: B },
    }
}

impl<B> CdnBody<B> {
    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn parts(parts: Vec<Bytes>) -> Self {
        Self {
            kind: Kind::Parts {
                parts: parts.into(),
            },
        }
    }

    pub(crate) fn fill(reader: FillReader) -> Self {
        Self {
            kind: Kind::Fill { reader },
        }
    }

    pub(crate) fn origin(body: B) -> Self {
        Self {
            kind: Kind::Origin { body },
        }
    }
}

impl<B> CdnBody<B> {
    /// Bytes of a body served from storage (0 for streams).
    pub(crate) fn stored_len(&self) -> u64 {
        match &self.kind {
            Kind::Full { data } => data.as_ref().map_or(0, |d| d.len() as u64),
            Kind::Parts { parts } => parts.iter().map(|p| p.len() as u64).sum(),
            _ => 0,
        }
    }
}

impl<B> std::fmt::Debug for CdnBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "Empty",
            Kind::Full { .. } => "Full",
            Kind::Parts { .. } => "Parts",
            Kind::Fill { .. } => "Fill",
            Kind::Origin { .. } => "Origin",
        };
        f.debug_tuple("CdnBody").field(&kind).finish()
    }
}

impl<B> Body for CdnBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Parts { parts } => Poll::Ready(parts.pop_front().map(|d| Ok(Frame::data(d)))),
            KindProj::Fill { reader } => reader
                .poll_chunk(cx)
                .map(|c| c.map(|r| r.map(Frame::data).map_err(Into::into))),
            KindProj::Origin { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full { data } => data.is_none(),
            Kind::Parts { parts } => parts.is_empty(),
            // Only a fill that ended complete is over: a failed one must still be polled,
            // so its reader can report the failure (hyper then aborts the response instead
            // of ending it cleanly).
            Kind::Fill { reader } => reader.remaining_if_complete() == Some(0),
            Kind::Origin { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Parts { parts } => {
                SizeHint::with_exact(parts.iter().map(|p| p.len() as u64).sum())
            }
            Kind::Fill { reader } => match reader.remaining_if_complete() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Kind::Origin { body } => body.size_hint(),
        }
    }
}
