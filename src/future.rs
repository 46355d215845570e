//! [`ResponseFuture`]: ready at once for hits, boxed for trips to the origin.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::CdnBody;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// The future of [`CdnService`](crate::CdnService). A hit, a redirect or an edge error is
    /// ready without allocating; misses and revalidations are one boxed future.
    pub struct ResponseFuture<B, E> {
        #[pin]
        kind: Kind<B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B, E> {
        Ready { response: Option<Response<CdnBody<B>>> },
        Origin { future: BoxFuture<Result<Response<CdnBody<B>>, E>> },
    }
}

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn ready(response: Response<CdnBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn origin(
        future: impl Future<Output = Result<Response<CdnBody<B>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            kind: Kind::Origin {
                future: Box::pin(future),
            },
        }
    }
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CdnBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Origin { future } => future.as_mut().poll(cx),
        }
    }
}
