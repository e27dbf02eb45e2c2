//! A connection that is either plain TCP or TLS over TCP, with the non-blocking, readiness-based
//! interface the data path is written against (`readable`, `try_read_buf`, `writable`,
//! `try_write_vectored`), for clients and for nodes alike.
//!
//! The plain arm is a bare `TcpStream`: every call is one match away from tokio's own, so the
//! hot path of a proxy without TLS is unchanged. The TLS arm drives a rustls connection by hand
//! (rustls is sans-I/O): reads pull TLS records off the socket until it would block and hand
//! back decrypted bytes; writes encrypt into rustls's buffer and push records out as far as the
//! socket takes them. Handshakes are done by tokio-rustls before a `Stream` exists.
//!
//! Invariants: a TLS read drains the socket until `WouldBlock` or the caller's buffer is full,
//! and remembers when decrypted bytes are left over, so `readable()` never waits on a socket
//! while data sits in rustls; encrypted bytes that the socket did not take are reported by
//! [`Stream::wants_flush`], and callers keep waiting for `writable()` until it is false. All
//! methods take `&self` (the TLS state sits behind a mutex that is never held across an
//! `.await`, so never contended), so a backend connection's reader and writer tasks can share
//! one `Rc<Stream>`, and control-plane clients stay `Send`.

use crate::net::dialer::Dialer;
use bytes::{Buf, Bytes, BytesMut};
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpStream;

/// A plain or TLS connection.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, after a completed handshake.
    Tls(Box<TlsStream>),
}

/// The TLS arm: the socket and the rustls state machine for it.
pub struct TlsStream {
    tcp: TcpStream,
    state: Mutex<TlsState>,
}

struct TlsState {
    conn: rustls::Connection,
    /// rustls holds decrypted bytes the caller has not taken yet.
    plain_pending: bool,
    /// The peer closed (TCP EOF or close_notify).
    eof: bool,
}

/// `Read`/`Write` over a tokio socket's non-blocking calls, for rustls's `read_tls`/`write_tls`.
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encrypted bytes kept in rustls before new plaintext is refused with `WouldBlock`.
const TLS_BACKLOG: usize = 64 * 1024;
/// How much a full buffer grows by before a TLS read (and `read_some` before any read).
const TLS_READ_CHUNK: usize = 16 * 1024;

impl TlsState {
    /// Pushes buffered TLS records to the socket. `Ok(true)` when nothing is left.
    fn push(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Nonblocking(tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Moves decrypted bytes into `buf` (up to its spare capacity). `Ok(None)` when rustls has
    /// none now; `Ok(Some(0))` at the end of the stream.
    fn take_plain(&mut self, buf: &mut BytesMut) -> io::Result<Option<usize>> {
        use std::io::BufRead;
        let room = buf.capacity() - buf.len();
        let mut reader = self.conn.reader();
        let n = match reader.fill_buf() {
            Ok(chunk) => {
                let n = chunk.len().min(room);
                buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) => {
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    // TCP closed without close_notify: the end, as for a plain socket.
                    io::ErrorKind::UnexpectedEof => Ok(Some(0)),
                    _ => Err(e),
                };
            }
        };
        reader.consume(n);
        Ok(Some(n))
    }

    fn read(&mut self, tcp: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
        // As tokio's own `try_read_buf` (through `BytesMut::chunk_mut`): a full buffer grows,
        // so `Ok(0)` always means the end of the stream.
        if buf.len() == buf.capacity() {
            buf.reserve(TLS_READ_CHUNK);
        }
        let mut total = 0;
        loop {
            if buf.len() == buf.capacity() {
                self.plain_pending = true;
                return Ok(total);
            }
            match self.take_plain(buf)? {
                Some(0) if total == 0 => {
                    self.eof = true;
                    return Ok(0);
                }
                Some(0) => {
                    self.eof = true;
                    return Ok(total);
                }
                Some(n) => {
                    total += n;
                    continue;
                }
                None => {}
            }
            self.plain_pending = false;
            if self.eof {
                return Ok(total);
            }
            match self.conn.read_tls(&mut Nonblocking(tcp)) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if total > 0 { Ok(total) } else { Err(e) };
                }
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Send the alert rustls queued, then report the error.
                let _ = self.push(tcp);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Post-handshake messages (key updates) may want an answer.
            if self.conn.wants_write() {
                self.push(tcp)?;
            }
        }
    }

    fn write_vectored(&mut self, tcp: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.push(tcp)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write_vectored(bufs)?;
        self.push(tcp)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl TlsStream {
    /// The TLS state. Never held across an `.await`, so never contended; a panic while it was
    /// held leaves rustls consistent enough to report errors, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, TlsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new(tcp: TcpStream, conn: rustls::Connection) -> TlsStream {
        let mut conn = conn;
        conn.set_buffer_limit(Some(TLS_BACKLOG));
        TlsStream {
            tcp,
            state: Mutex::new(TlsState {
                conn,
                // The handshake may have brought application data along: look first.
                plain_pending: true,
                eof: false,
            }),
        }
    }
}

impl Stream {
    /// The underlying socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.tcp,
        }
    }

    /// The names on the peer's certificate (see [`crate::net::tls::certificate_names`]); empty for
    /// plain TCP or a peer that sent none.
    pub fn peer_certificate_names(&self) -> Vec<String> {
        match self {
            Stream::Plain(_) => Vec::new(),
            Stream::Tls(t) => t
                .lock()
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::net::tls::certificate_names(c))
                .unwrap_or_default(),
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Waits until a read may make progress: the socket is readable, or (TLS) decrypted bytes
    /// are already waiting.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.readable().await,
            Stream::Tls(t) => {
                let pending = {
                    let st = t.lock();
                    st.plain_pending || st.eof
                };
                if pending {
                    return Ok(());
                }
                t.tcp.readable().await
            }
        }
    }

    /// [`Stream::readable`] as a poll, for a caller that waits on several things in one
    /// poll (the session loop). Only the last task to poll it is woken: one reader per
    /// stream.
    pub fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::Tls(t) => {
                let pending = {
                    let st = t.lock();
                    st.plain_pending || st.eof
                };
                if pending {
                    return std::task::Poll::Ready(Ok(()));
                }
                t.tcp.poll_read_ready(cx)
            }
        }
    }

    /// [`Stream::writable`] as a poll (see [`Stream::poll_read_ready`]).
    pub fn poll_write_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.tcp().poll_write_ready(cx)
    }

    /// Waits until the socket can take more bytes.
    pub async fn writable(&self) -> io::Result<()> {
        self.tcp().writable().await
    }

    /// Appends what can be read without blocking to `buf`'s spare capacity. `Ok(0)` at the end
    /// of the stream; `WouldBlock` when nothing is there.
    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_read_buf(buf),
            Stream::Tls(t) => t.lock().read(&t.tcp, buf),
        }
    }

    /// Writes as much of `bufs` as can go without blocking; returns the bytes taken. For TLS,
    /// "taken" means encrypted into rustls: see [`Stream::wants_flush`].
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_write_vectored(bufs),
            Stream::Tls(t) => t.lock().write_vectored(&t.tcp, bufs),
        }
    }

    /// [`Stream::try_write_vectored`] of the first `max` buffers of `bufs`. A single buffer
    /// (an unpipelined client's reply, one request to a backend) goes without building the
    /// list of slices.
    pub fn try_write_bufs<'a, I>(&self, bufs: I, max: usize) -> io::Result<usize>
    where
        I: IntoIterator<Item = &'a Bytes>,
        I::IntoIter: ExactSizeIterator,
    {
        let mut bufs = bufs.into_iter();
        if bufs.len() == 1 {
            if let Some(only) = bufs.next() {
                return self.try_write_vectored(&[IoSlice::new(only)]);
            }
        }
        // The slices on the stack for up to 32 buffers (a `Vec` per write was an allocation
        // per request), filled in place: a `SmallVec` returned by value was a 528-byte copy
        // per write.
        let mut inline = [IoSlice::new(&[]); 32];
        let mut spill = Vec::new();
        let mut n = 0;
        for b in bufs.take(max) {
            if n < inline.len() {
                inline[n] = IoSlice::new(b);
            } else {
                if spill.is_empty() {
                    spill.extend_from_slice(&inline);
                }
                spill.push(IoSlice::new(b));
            }
            n += 1;
        }
        match spill.is_empty() {
            true => self.try_write_vectored(&inline[..n]),
            false => self.try_write_vectored(&spill),
        }
    }

    /// Whether encrypted bytes are still waiting for the socket (always false for plain TCP).
    pub fn wants_flush(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.lock().conn.wants_write(),
        }
    }

    /// Pushes waiting encrypted bytes to the socket without blocking; `Ok(true)` when none are
    /// left.
    pub fn try_flush(&self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            Stream::Tls(t) => t.lock().push(&t.tcp),
        }
    }

    /// Writes `data` completely (control-plane use: one command at a time).
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            match self.try_write_vectored(&[IoSlice::new(&data[done..])]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        self.flush().await
    }

    /// Waits until every encrypted byte reached the socket (nothing to do for plain TCP).
    pub async fn flush(&self) -> io::Result<()> {
        while !self.try_flush()? {
            self.writable().await?;
        }
        Ok(())
    }

    /// Reads at least one byte into `buf`, waiting as needed; `Ok(0)` at the end of the stream.
    pub async fn read_some(&self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            if buf.capacity() == buf.len() {
                buf.reserve(TLS_READ_CHUNK);
            }
            self.readable().await?;
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// After a short plain read: tells tokio the receive queue is empty (see
    /// [`drained`]). A TLS read already ran until `WouldBlock`.
    pub fn drained(&self) {
        if let Stream::Plain(s) = self {
            drained(s);
        }
    }

    /// Ends the sending side: TLS `close_notify` first, then TCP FIN.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if let Stream::Tls(t) = self {
            t.lock().conn.send_close_notify();
        }
        self.flush().await?;
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(t) => t.tcp.shutdown().await,
        }
    }

    /// Accepts a TLS client on `tcp` within `timeout`.
    pub async fn accept_tls(
        tcp: TcpStream,
        acceptor: &tokio_rustls::TlsAcceptor,
        timeout: Duration,
    ) -> io::Result<Stream> {
        let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (tcp, conn) = tls.into_inner();
        Ok(Stream::Tls(Box::new(TlsStream::new(tcp, conn.into()))))
    }

    /// Connects to a node at `addr` (`host:port`) within `timeout`: TCP, then TLS when
    /// `dialer`'s proxy has `backend_tls` on (its configuration as of now, see
    /// [`Dialer::backend_tls`]). Errors say which step failed. Sending the credentials is the
    /// caller's first request ([`Dialer::auth`]).
    pub async fn connect(dialer: &Dialer, addr: &str, timeout: Duration) -> io::Result<Stream> {
        let steps = async {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = dialer.backend_tls() else {
                return Ok(Stream::Plain(tcp));
            };
            let name = tls.server_name(addr)?;
            let stream = tls.connector.connect(name, tcp).await.map_err(|e| {
                let hint =
                    "check backend_tls_ca_file, backend_tls_server_name and the client certificate";
                io::Error::new(e.kind(), format!("TLS handshake: {e} ({hint})"))
            })?;
            let (tcp, conn) = stream.into_inner();
            Ok(Stream::Tls(Box::new(TlsStream::new(tcp, conn.into()))))
        };
        match tokio::time::timeout(timeout, steps).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {}ms", timeout.as_millis()),
            )),
        }
    }
}

/// Most buffers handed to one `writev` call (Linux's IOV_MAX is 1024).
const MAX_IOV: usize = 512;

/// Tells tokio that a socket's receive queue is empty after a short read, so the next
/// `readable()` waits for new data instead of costing a read that returns EAGAIN (half of all
/// reads under pipelined load). Safe against lost wake-ups: tokio clears the readiness only if
/// no new readiness event arrived since it was observed, and new data raises a new event.
pub fn drained(stream: &TcpStream) {
    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Writes every buffer, in order, with as few `writev` calls as the socket allows (and, for
/// TLS, until every encrypted byte reached the socket).
///
/// Cancel-safe: before each wait for room, the buffers written so far leave `bufs`, so a
/// caller that drops the future (a deadline raced against a blocked write) and calls again
/// sends exactly what was left.
pub async fn write_all(stream: &Stream, bufs: &mut Vec<Bytes>) -> io::Result<()> {
    let mut start = 0;
    while start < bufs.len() {
        let result = stream.try_write_bufs(&bufs[start..], MAX_IOV);
        let written = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                bufs.drain(..start);
                start = 0;
                stream.writable().await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut n = written;
        while n > 0 && start < bufs.len() {
            let len = bufs[start].len();
            if n >= len {
                n -= len;
                start += 1;
            } else {
                bufs[start].advance(n);
                n = 0;
            }
        }
    }
    bufs.clear();
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_streams_never_want_a_flush() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("addr");
            let c = TcpStream::connect(addr).await.expect("connect");
            let (s, _) = l.accept().await.expect("accept");
            let (c, s) = (Stream::Plain(c), Stream::Plain(s));
            c.write_all(b"ping").await.expect("write");
            let mut buf = BytesMut::with_capacity(16);
            let n = s.read_some(&mut buf).await.expect("read");
            assert_eq!(&buf[..n], b"ping");
            assert!(!c.wants_flush() && !c.is_tls());
        });
    }

    /// A connected TLS pair (server side, client side) over loopback, certificates from rcgen.
    async fn tls_pair() -> (Stream, Stream) {
        use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
        use std::sync::Arc;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = CertificateDer::from(cert.der().to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let accept = async {
            let (tcp, _) = l.accept().await.expect("accept");
            Stream::accept_tls(tcp, &acceptor, Duration::from_secs(5))
                .await
                .expect("server handshake")
        };
        let connect = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from("localhost").expect("name");
            let tls = connector
                .connect(name, tcp)
                .await
                .expect("client handshake");
            let (tcp, conn) = tls.into_inner();
            Stream::Tls(Box::new(TlsStream::new(tcp, conn.into())))
        };
        tokio::join!(accept, connect)
    }

    /// Every byte `try_write_vectored` accepts reaches the peer, even when the socket was full
    /// at the time: what rustls still holds is reported by `wants_flush` and sent by `flush`.
    #[test]
    fn tls_bytes_accepted_while_the_socket_is_full_are_delivered() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (server, client) = tls_pair().await;
            let chunk = vec![7u8; 64 * 1024];
            let mut accepted = 0usize;
            // The client reads nothing yet: fill the socket until the writer is refused.
            loop {
                match server.try_write_vectored(&[IoSlice::new(&chunk)]) {
                    Ok(n) => accepted += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            assert!(
                server.wants_flush(),
                "a refused write leaves records in rustls"
            );
            let send = async {
                server.flush().await.expect("flush");
            };
            let receive = async {
                let mut buf = BytesMut::with_capacity(256 * 1024);
                let mut got = 0usize;
                while got < accepted {
                    buf.clear();
                    let n =
                        tokio::time::timeout(Duration::from_secs(10), client.read_some(&mut buf))
                            .await
                            .expect("bytes accepted by the writer never arrived")
                            .expect("read");
                    assert!(n > 0, "EOF after {got} of {accepted} bytes");
                    assert!(buf.iter().all(|&b| b == 7));
                    got += n;
                }
                got
            };
            let ((), got) = tokio::join!(send, receive);
            assert_eq!(got, accepted);
            assert!(!server.wants_flush());
        });
    }

    /// Reads hand back data rustls decrypted earlier even when the socket has nothing new,
    /// and a small caller buffer gets the rest on the next read.
    #[test]
    fn tls_reads_resume_from_decrypted_data_left_in_rustls() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (server, mut client) = tls_pair().await;
            let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            client.write_all(&payload).await.expect("write");
            let mut got = Vec::new();
            while got.len() < payload.len() {
                // A buffer far smaller than a TLS record.
                let mut buf = BytesMut::with_capacity(1000);
                let n = tokio::time::timeout(Duration::from_secs(10), server.read_some(&mut buf))
                    .await
                    .expect("data left in rustls was not handed back")
                    .expect("read");
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, payload);
            client.shutdown().await.expect("close_notify");
            let mut buf = BytesMut::with_capacity(16);
            let n = tokio::time::timeout(Duration::from_secs(10), server.read_some(&mut buf))
                .await
                .expect("EOF seen")
                .expect("read");
            assert_eq!(n, 0, "the peer's close is the end of the stream");
        });
    }
}
