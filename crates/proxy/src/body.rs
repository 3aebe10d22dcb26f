//! The caller's request body, streamed to the registry while it is hashed
//! and counted: the audit record gets its SHA-256 without the gateway
//! holding the whole body, and a body past the limit is cut off mid-stream.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

/// Boxed error for streamed bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What the stream learned, read after the upstream exchange.
#[derive(Debug, Default)]
pub struct BodyDigest {
    sha256: Mutex<Option<String>>,
    exceeded: AtomicBool,
}

impl BodyDigest {
    /// Hex SHA-256 of the whole body, once it was read to the end.
    pub fn sha256(&self) -> Option<String> {
        self.sha256.lock().ok().and_then(|h| h.clone())
    }

    /// True when the body went past the limit (the request is then 413).
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

/// Wraps a body, hashing and counting every data frame.
pub struct HashingBody<B> {
    inner: B,
    hasher: Option<Sha256>,
    seen: usize,
    limit: usize,
    digest: Arc<BodyDigest>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
struct TooLarge(usize);

impl<B: Body> HashingBody<B> {
    pub fn new(inner: B, limit: usize) -> (Self, Arc<BodyDigest>) {
        let digest = Arc::new(BodyDigest::default());
        let mut body = HashingBody {
            inner,
            hasher: Some(Sha256::new()),
            seen: 0,
            limit,
            digest: Arc::clone(&digest),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        (body, digest)
    }

    fn finish(&mut self) {
        if let Some(hasher) = self.hasher.take() {
            if let Ok(mut slot) = self.digest.sha256.lock() {
                *slot = Some(hex::encode(hasher.finalize()));
            }
        }
    }
}

impl<B> Body for HashingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len());
                    if this.seen > this.limit {
                        this.digest.exceeded.store(true, Ordering::Relaxed);
                        this.hasher = None;
                        return Poll::Ready(Some(Err(Box::new(TooLarge(this.limit)))));
                    }
                    if let Some(hasher) = &mut this.hasher {
                        hasher.update(data);
                    }
                }
                // Senders stop polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.hasher = None;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    // An empty body is never polled: its hash is known at once (see `new`).

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn hashes_what_passes_through() {
        let (body, digest) = HashingBody::new(Full::new(Bytes::from_static(b"hello")), 10);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert_eq!(
            digest.sha256().unwrap(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(!digest.exceeded());
    }

    #[tokio::test]
    async fn cuts_off_past_the_limit() {
        let (body, digest) = HashingBody::new(Chunks(4), 25);
        assert!(body.collect().await.is_err());
        assert!(digest.exceeded());
        assert!(digest.sha256().is_none());
    }

    /// Yields `n` chunks of ten bytes.
    struct Chunks(usize);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"0123456789")))))
        }
    }
}
