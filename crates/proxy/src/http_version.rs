//! Which HTTP a connection speaks, found before hyper reads from it, and
//! within the handshake timeout: plaintext connections by peeking at their
//! first bytes, TLS ones by ALPN. An HTTP/2 connection must also send its
//! preface within that time; hyper's HTTP/2 handshake has no timer of its own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Which HTTP a connection speaks, when known before hyper reads from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before peeking again at a connection whose bytes so far
/// are the start of the HTTP/2 preface: peeking does not consume them, so the
/// socket stays readable and an immediate retry would spin.
const PREFACE_RETRY: Duration = Duration::from_millis(5);

/// Tells an HTTP/1 connection from an HTTP/2 one by peeking at its first
/// bytes, without taking them off the socket. `None`: it closed first.
pub async fn plaintext_version(stream: &tokio::net::TcpStream) -> io::Result<Option<HttpVersion>> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if first[..n] != H2_PREFACE[..n] {
            return Ok(Some(HttpVersion::Http1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(HttpVersion::Http2));
        }
        tokio::time::sleep(PREFACE_RETRY).await;
    }
}

/// The version a TLS connection agreed by ALPN. HTTP/2 over TLS is only ever
/// agreed that way (RFC 9113, section 3.2), so a client that names no
/// protocol speaks HTTP/1.1.
pub fn negotiated_version(alpn: Option<&[u8]>) -> HttpVersion {
    match alpn {
        Some(b"h2") => HttpVersion::Http2,
        _ => HttpVersion::Http1,
    }
}

/// Reads an HTTP/2 connection's preface (the caller bounds the wait) and
/// returns the stream with the preface put back in front, for hyper to read
/// again. `None`: the client sent something else.
pub async fn with_h2_preface<S>(mut stream: S) -> io::Result<Option<Replayed<S>>>
where
    S: AsyncRead + Unpin,
{
    let mut first = [0u8; H2_PREFACE.len()];
    stream.read_exact(&mut first).await?;
    if &first != H2_PREFACE {
        return Ok(None);
    }
    Ok(Some(Replayed {
        first,
        replayed: 0,
        stream,
    }))
}

/// A stream whose first bytes, already read, are served again before the rest.
pub struct Replayed<S> {
    first: [u8; H2_PREFACE.len()],
    replayed: usize,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.first.len() {
            let rest = &this.first[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A connected pair on 127.0.0.1: (client side, server side).
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn plaintext_version_peeks_without_taking_the_bytes() {
        let request = b"GET /population/persons/1 HTTP/1.1\r\nhost: x\r\n\r\n";
        let (mut client, mut server) = pair().await;
        client.write_all(request).await.unwrap();
        assert_eq!(
            plaintext_version(&server).await.unwrap(),
            Some(HttpVersion::Http1)
        );
        // hyper still reads the whole request, from its first byte.
        let mut read = vec![0u8; request.len()];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(read, request);

        let (mut client, server) = pair().await;
        client.write_all(H2_PREFACE).await.unwrap();
        assert_eq!(
            plaintext_version(&server).await.unwrap(),
            Some(HttpVersion::Http2)
        );
    }

    #[tokio::test]
    async fn plaintext_version_waits_for_a_split_preface_and_tells_lookalikes_apart() {
        // The preface in two pieces: the answer waits for the second.
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            client.write_all(&H2_PREFACE[10..]).await.unwrap();
            client
        });
        assert_eq!(
            plaintext_version(&server).await.unwrap(),
            Some(HttpVersion::Http2)
        );
        drop(rest.await.unwrap());

        // An HTTP/1 request with the method PRI is HTTP/1 from its 12th byte.
        let (mut client, server) = pair().await;
        client
            .write_all(b"PRI * HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            plaintext_version(&server).await.unwrap(),
            Some(HttpVersion::Http1)
        );

        // A client that hangs up before its first byte has nothing to serve.
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(plaintext_version(&server).await.unwrap(), None);
    }

    #[test]
    fn the_tls_version_is_the_one_alpn_agreed_and_http1_without_alpn() {
        assert_eq!(negotiated_version(Some(b"h2")), HttpVersion::Http2);
        assert_eq!(negotiated_version(Some(b"http/1.1")), HttpVersion::Http1);
        assert_eq!(negotiated_version(None), HttpVersion::Http1);
    }

    #[tokio::test]
    async fn the_h2_preface_is_read_and_then_served_again_before_the_rest() {
        let (mut client, server) = pair().await;
        client.write_all(H2_PREFACE).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        let mut replayed = with_h2_preface(server).await.unwrap().unwrap();
        let mut read = vec![0u8; H2_PREFACE.len() + b"frames".len()];
        replayed.read_exact(&mut read).await.unwrap();
        assert_eq!(&read[..H2_PREFACE.len()], H2_PREFACE);
        assert_eq!(&read[H2_PREFACE.len()..], b"frames");

        let (mut client, server) = pair().await;
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(with_h2_preface(server).await.unwrap().is_none());
    }
}
