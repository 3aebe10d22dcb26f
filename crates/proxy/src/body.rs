//! The caller's request body, streamed to the registry while it is hashed
//! and counted: the audit record gets its SHA-256 without the gateway
//! holding the whole body, and a body past the limit is cut off mid-stream.
//!
//! A registry may answer before reading the whole body. The sender then
//! drops the rest; [`HashingBody`] hands the unread remainder back to its
//! [`BodyDigest`], and [`BodyDigest::drain_rest`] reads it (still within the
//! limit), so the gateway knows the body's real size and hash before it
//! decides to release the answer.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

/// Boxed error for streamed bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// How the body ended, as far as the gateway has read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyOutcome {
    /// Read to the end within the limit: its SHA-256.
    Complete(tollbu_audit::Hash),
    /// More than the limit (413).
    TooLarge,
    /// The caller's stream failed or stalled (400).
    Unreadable,
}

/// Hashing state shared by the streaming body and the request handler.
struct Hashing {
    hasher: Option<Sha256>,
    seen: usize,
    limit: usize,
    outcome: Option<BodyOutcome>,
}

impl Hashing {
    /// Accounts one data chunk; false once the limit is passed.
    fn take(&mut self, data: &[u8]) -> bool {
        self.seen = self.seen.saturating_add(data.len());
        if self.seen > self.limit {
            self.hasher = None;
            self.outcome = Some(BodyOutcome::TooLarge);
            return false;
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
        true
    }

    fn finish(&mut self) {
        if let Some(hasher) = self.hasher.take() {
            self.outcome = Some(BodyOutcome::Complete(hasher.finalize().into()));
        }
    }

    fn fail(&mut self) {
        self.hasher = None;
        self.outcome.get_or_insert(BodyOutcome::Unreadable);
    }
}

/// What the handler keeps of the body after handing it to the sender.
pub struct BodyDigest<B> {
    hashing: Mutex<Hashing>,
    /// The unread remainder, handed back if the sender dropped the body early.
    rest: Mutex<Option<B>>,
    /// Signalled when the body ends or the sender lets go of it: a registry
    /// can answer while its client connection is still sending the body.
    settled: tokio::sync::Notify,
}

/// Wraps a body, hashing and counting every data frame.
pub struct HashingBody<B> {
    inner: Option<B>,
    digest: Arc<BodyDigest<B>>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
struct TooLarge(usize);

#[derive(Debug, thiserror::Error)]
#[error("request body already consumed")]
struct Consumed;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl<B: Body> HashingBody<B> {
    pub fn new(inner: B, limit: usize) -> (Self, Arc<BodyDigest<B>>) {
        let mut hashing = Hashing {
            hasher: Some(Sha256::new()),
            seen: 0,
            limit,
            outcome: None,
        };
        if inner.is_end_stream() {
            hashing.finish();
        }
        let digest = Arc::new(BodyDigest {
            hashing: Mutex::new(hashing),
            rest: Mutex::new(None),
            settled: tokio::sync::Notify::new(),
        });
        (
            HashingBody {
                inner: Some(inner),
                digest: Arc::clone(&digest),
            },
            digest,
        )
    }
}

impl<B> Drop for HashingBody<B> {
    fn drop(&mut self) {
        let unfinished = lock(&self.digest.hashing).outcome.is_none();
        if unfinished && let Some(inner) = self.inner.take() {
            *lock(&self.digest.rest) = Some(inner);
        }
        self.digest.settled.notify_one();
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(Consumed))));
        };
        let Poll::Ready(polled) = Pin::new(&mut *inner).poll_frame(cx) else {
            return Poll::Pending;
        };
        let mut hashing = lock(&this.digest.hashing);
        let polled = match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && !hashing.take(data)
                {
                    Some(Err(Box::new(TooLarge(hashing.limit)) as BodyError))
                } else {
                    // Senders stop polling once the body says it has ended.
                    if inner.is_end_stream() {
                        hashing.finish();
                    }
                    Some(Ok(frame))
                }
            }
            Some(Err(error)) => {
                hashing.fail();
                Some(Err(error.into()))
            }
            None => {
                hashing.finish();
                None
            }
        };
        let settled = hashing.outcome.is_some();
        drop(hashing);
        if settled {
            this.digest.settled.notify_one();
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl<B> BodyDigest<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// The outcome so far, without reading more.
    pub fn outcome(&self) -> Option<BodyOutcome> {
        lock(&self.hashing).outcome.clone()
    }

    /// Waits until the sender has read the body to its end or let go of it,
    /// reads whatever it left unread (within the limit), all within
    /// `timeout`, and returns how the body ended.
    pub async fn drain_rest(&self, timeout: Duration) -> BodyOutcome {
        let settled = tokio::time::timeout(timeout, async {
            loop {
                let rest = lock(&self.rest).take();
                if let Some(rest) = rest {
                    return self.read_rest(rest).await;
                }
                if lock(&self.hashing).outcome.is_some() {
                    return;
                }
                // Still held by the sender, which may go on sending it after
                // the registry has answered.
                self.settled.notified().await;
            }
        })
        .await;
        let mut hashing = lock(&self.hashing);
        if settled.is_err() || hashing.outcome.is_none() {
            hashing.fail();
        }
        hashing.outcome.clone().unwrap_or(BodyOutcome::Unreadable)
    }

    async fn read_rest(&self, mut rest: B) {
        while let Some(frame) = rest.frame().await {
            let Ok(frame) = frame else {
                lock(&self.hashing).fail();
                return;
            };
            let mut hashing = lock(&self.hashing);
            if let Some(data) = frame.data_ref()
                && !hashing.take(data)
            {
                return;
            }
        }
        lock(&self.hashing).finish();
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
        // SHA-256("hello"), a known answer.
        let mut expected = [0u8; 32];
        hex::decode_to_slice(
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            &mut expected,
        )
        .unwrap();
        assert_eq!(
            digest.drain_rest(Duration::from_secs(1)).await,
            BodyOutcome::Complete(expected)
        );
    }

    #[tokio::test]
    async fn cuts_off_past_the_limit() {
        let (body, digest) = HashingBody::new(Chunks(4), 25);
        assert!(body.collect().await.is_err());
        assert_eq!(digest.outcome(), Some(BodyOutcome::TooLarge));
    }

    #[tokio::test]
    async fn a_remainder_left_by_the_sender_is_drained_and_judged() {
        // The sender reads one chunk and drops the body.
        let (mut body, digest) = HashingBody::new(Chunks(4), 25);
        let _first = body.frame().await;
        drop(body);
        assert_eq!(digest.outcome(), None);
        assert_eq!(
            digest.drain_rest(Duration::from_secs(1)).await,
            BodyOutcome::TooLarge
        );

        let (mut body, digest) = HashingBody::new(Chunks(2), 25);
        let _first = body.frame().await;
        drop(body);
        let expected: tollbu_audit::Hash = Sha256::digest(b"01234567890123456789").into();
        assert_eq!(
            digest.drain_rest(Duration::from_secs(1)).await,
            BodyOutcome::Complete(expected)
        );
    }

    #[tokio::test]
    async fn a_body_the_sender_still_holds_is_waited_for() {
        // The registry answered while its connection was still sending the
        // body: the sender finishes it after `drain_rest` has begun.
        let (mut body, digest) = HashingBody::new(Chunks(2), 25);
        let _first = body.frame().await;
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            while body.frame().await.is_some() {}
            // Held on, as hyper's connection task does, after the end.
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(body);
        });
        let expected: tollbu_audit::Hash = Sha256::digest(b"01234567890123456789").into();
        assert_eq!(
            digest.drain_rest(Duration::from_secs(5)).await,
            BodyOutcome::Complete(expected)
        );
        sender.await.unwrap();

        // A sender that lets go later, without reading on: the rest is read here.
        let (mut body, digest) = HashingBody::new(Chunks(2), 25);
        let _first = body.frame().await;
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(body);
        });
        assert_eq!(
            digest.drain_rest(Duration::from_secs(5)).await,
            BodyOutcome::Complete(expected)
        );
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_held_past_the_timeout_is_unreadable() {
        let (mut body, digest) = HashingBody::new(Chunks(2), 25);
        let _first = body.frame().await;
        assert_eq!(
            digest.drain_rest(Duration::from_millis(50)).await,
            BodyOutcome::Unreadable
        );
        drop(body);
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
