//! Dedicated backend connections: one client's own connection to one node, for what cannot
//! share a multiplexed connection — transactions (the node keeps MULTI/WATCH state per
//! connection), blocking commands (they hold the connection until they return) and pub/sub
//! (the connection switches to subscribed mode).
//!
//! Invariants: every [`Expect`] handed to [`Dedicated::send`] is completed exactly once — by
//! its reply, or by an error when the connection fails or is dropped — so a session's reply
//! queue never stalls; a dedicated connection never reconnects by itself (the state it carried
//! is gone with it, and only its owner knows what that means); dropping the last handle closes
//! the socket, which is how a node learns that a blocked or subscribed client left.

use crate::local_notify::LocalNotify;
use crate::net::dialer::Dialer;
use crate::net::stream::Stream;
use crate::route::dispatch::{parse_redirect, ReplySlot};
use crate::route::resp::{self, ReplyScanner};
use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the next reply frame (or frames) on a dedicated connection is for.
pub enum Expect {
    /// The frame is this request's reply. With `pinned`, redirects are not followed but turned
    /// into an error that says the transaction's slot moved (a client must never see MOVED).
    Reply {
        /// Where the reply goes.
        slot: Rc<ReplySlot>,
        /// Rewrite MOVED/ASK/TRYAGAIN into an abort message.
        pinned: bool,
        /// Fail the connection if no reply arrives within this time (None: wait as long as
        /// the command itself may, for blocking commands).
        timeout: Option<Duration>,
    },
    /// The frame is dropped (the `+OK` of an `ASKING` sent before a redirected command).
    Discard,
    /// The reply to the `AUTH` (`auth: true`) or `HELLO 3` a connection opens with. An error
    /// ends the connection, and everything queued on it fails with an error saying why, as on
    /// the shared connections: a client never gets a bare NOAUTH from a connection the proxy
    /// failed to set up.
    Handshake {
        /// AUTH (the proxy's credentials) rather than HELLO 3.
        auth: bool,
    },
    /// `count` frames are acknowledgements (pub/sub confirmations); when the last one
    /// arrives, `slot` is filled with `reply`, which the proxy composed itself.
    Acks {
        /// Acknowledgements still to come.
        count: usize,
        /// Where the composed reply goes.
        slot: Rc<ReplySlot>,
        /// The reply the client gets once the node has confirmed.
        reply: Bytes,
    },
}

impl Expect {
    fn fail(self, msg: &str) {
        match self {
            Expect::Reply { slot, .. } | Expect::Acks { slot, .. } => slot.fill(resp::error(msg)),
            Expect::Discard | Expect::Handshake { .. } => {}
        }
    }

    fn deadline(&self, written: Instant) -> Option<Instant> {
        match self {
            Expect::Reply {
                timeout: Some(t), ..
            } => Some(written + *t),
            _ => None,
        }
    }
}

/// Receives the frames a node sends on its own (pub/sub messages).
pub trait Sink {
    /// A message frame arrived from `addr`, in the order the node sent it. `before` is the
    /// reply slot this connection was waiting on when it arrived: the node sent the message
    /// before that reply, so the client must see it before that reply too.
    fn message(&self, addr: &Arc<str>, frame: Bytes, before: Option<Rc<ReplySlot>>);
    /// The node ended a shard-channel subscription on its own (`sunsubscribe` push after the
    /// channel's slot moved away).
    fn unsubscribed(&self, addr: &Arc<str>, frame: Bytes);
    /// The connection failed or was closed by the node; `reason` says why.
    fn closed(&self, addr: &Arc<str>, reason: &str);
    /// The node answered the subscription command whose reply goes to `slot` with an error
    /// (NOPERM from its ACL, say): none of its channels were subscribed. Called before `slot`
    /// is filled with that error.
    fn refused(&self, addr: &Arc<str>, slot: &Rc<ReplySlot>);
}

struct State {
    /// Requests not written yet.
    out: Vec<Bytes>,
    /// Written (or queued) requests awaiting their frames, oldest first, with a deadline.
    pending: VecDeque<(Option<Instant>, Expect)>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

struct Inner {
    addr: Arc<str>,
    state: RefCell<State>,
    wake: LocalNotify,
    sink: Option<Rc<dyn Sink>>,
}

/// A client's own connection to one node. Requests are pipelined; frames are matched to
/// requests in order, except message frames, which go to the sink.
pub struct Dedicated {
    inner: Rc<Inner>,
    task: JoinHandle<()>,
    /// The connection's own `CLIENT ID` on its node, once asked (only connections that run
    /// blocking commands ask it: CLIENT UNBLOCK names the node's client by it).
    node_id: std::cell::Cell<Option<i64>>,
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        self.task.abort();
        self.inner
            .fail_all("ERR slotproxy: the dedicated backend connection was closed");
    }
}

impl Dedicated {
    /// Opens a connection to `addr` in the background, the way `dialer`'s proxy does (its
    /// TLS; its credentials first); requests sent meanwhile queue. `hello` (if any) is sent
    /// next and its reply dropped (HELLO 3 for RESP3 clients). Message frames go to `sink`
    /// (pub/sub connections only).
    pub fn open(
        dialer: Arc<Dialer>,
        addr: Arc<str>,
        connect_timeout: Duration,
        hello: Option<Bytes>,
        sink: Option<Rc<dyn Sink>>,
    ) -> Dedicated {
        let inner = Rc::new(Inner {
            addr,
            state: RefCell::new(State {
                out: Vec::new(),
                pending: VecDeque::new(),
                closed: None,
            }),
            wake: LocalNotify::new(),
            sink,
        });
        if let Some(auth) = dialer.auth() {
            inner.push(auth.clone(), Expect::Handshake { auth: true });
        }
        if let Some(h) = hello {
            inner.push(h, Expect::Handshake { auth: false });
        }
        let task = tokio::task::spawn_local(Rc::clone(&inner).run(dialer, connect_timeout));
        Dedicated {
            inner,
            task,
            node_id: std::cell::Cell::new(None),
        }
    }

    /// The connection's `CLIENT ID` on its node, if it was asked and answered.
    pub fn node_id(&self) -> Option<i64> {
        self.node_id.get()
    }

    /// Records the connection's `CLIENT ID` on its node (it stays the same for the
    /// connection's life).
    pub fn set_node_id(&self, id: Option<i64>) {
        self.node_id.set(id);
    }

    /// The node this connection goes to.
    pub fn addr(&self) -> &Arc<str> {
        &self.inner.addr
    }

    /// Why the connection ended, if it has.
    pub fn closed(&self) -> Option<String> {
        self.inner.state.borrow().closed.clone()
    }

    /// Whether nothing is queued or awaiting a reply (the connection can be reused).
    pub fn idle(&self) -> bool {
        let st = self.inner.state.borrow();
        st.closed.is_none() && st.pending.is_empty() && st.out.is_empty()
    }

    /// Queues a request; `expect` says what its frames are for. On a closed connection the
    /// expectation fails at once.
    pub fn send(&self, wire: Bytes, expect: Expect) {
        self.inner.push(wire, expect);
    }

    /// Sends a request and waits for its reply frame.
    pub async fn request(&self, wire: Bytes, timeout: Option<Duration>) -> Bytes {
        let signal = Rc::new(LocalNotify::new());
        let slot = ReplySlot::new(&signal);
        self.send(
            wire,
            Expect::Reply {
                slot: Rc::clone(&slot),
                pinned: false,
                timeout,
            },
        );
        loop {
            if let Some(reply) = slot.take() {
                return reply;
            }
            signal.notified().await;
        }
    }
}

impl Inner {
    fn push(&self, wire: Bytes, expect: Expect) {
        let mut st = self.state.borrow_mut();
        if let Some(reason) = &st.closed {
            let msg = format!(
                "ERR slotproxy: dedicated connection to {} is closed ({reason})",
                self.addr
            );
            drop(st);
            return expect.fail(&msg);
        }
        let was_empty = st.out.is_empty();
        st.out.push(wire);
        // The deadline is set again when the request is written.
        st.pending.push_back((None, expect));
        drop(st);
        if was_empty {
            self.wake.notify_one();
        }
    }

    fn fail_all(&self, reason: &str) {
        let msg = format!(
            "ERR slotproxy: connection to backend {} ended before the reply ({reason}); the command may or may not have run",
            self.addr
        );
        self.fail_all_with(reason, &msg);
    }

    /// Closes the connection's queue for `reason`; everything pending gets `msg`.
    fn fail_all_with(&self, reason: &str, msg: &str) {
        let pending = {
            let mut st = self.state.borrow_mut();
            if st.closed.is_none() {
                st.closed = Some(reason.to_string());
            }
            st.out.clear();
            std::mem::take(&mut st.pending)
        };
        for (_, e) in pending {
            e.fail(msg);
        }
    }

    /// The node refused the connection's AUTH or HELLO: nothing sent after it ran (the node
    /// answers every request on an unauthenticated connection with NOAUTH), so every request
    /// gets `msg` and the connection ends.
    fn refuse(&self, msg: String) -> Result<(), Ended> {
        tracing::error!(node = %self.addr, "{msg}");
        self.fail_all_with(&msg, &msg);
        if let Some(sink) = &self.sink {
            sink.closed(&self.addr, &msg);
        }
        Err(Ended::Refused(msg))
    }

    fn end(&self, reason: Ended) {
        if self.state.borrow().closed.is_some() {
            return;
        }
        let reason = reason.to_string();
        tracing::debug!(node = %self.addr, %reason, "dedicated connection ended");
        self.fail_all(&reason);
        if let Some(sink) = &self.sink {
            sink.closed(&self.addr, &reason);
        }
    }

    async fn run(self: Rc<Self>, dialer: Arc<Dialer>, connect_timeout: Duration) {
        let stream = match Stream::connect(&dialer, &self.addr, connect_timeout).await {
            Ok(s) => s,
            Err(e) => return self.end(Ended::Connect(e)),
        };
        // A dedicated connection may sit idle for hours (a blocked command, a subscriber): only
        // keepalive probes notice a node that vanished without a FIN (power loss, partition).
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL);
        if let Err(e) = socket2::SockRef::from(stream.tcp()).set_tcp_keepalive(&keepalive) {
            tracing::debug!(node = %self.addr, error = %e, "TCP keepalive not set");
        }
        let reason = self.serve(&stream).await;
        self.end(reason);
    }

    /// Moves queued requests to the socket and frames from it until the connection ends;
    /// returns why it ended.
    async fn serve(&self, stream: &Stream) -> Ended {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut scanner = ReplyScanner::default();
        let mut bufs: Vec<Bytes> = Vec::new();
        loop {
            let deadline = {
                let mut st = self.state.borrow_mut();
                let st = &mut *st;
                if !st.out.is_empty() {
                    let now = Instant::now();
                    bufs.append(&mut st.out);
                    // The requests just taken are the last ones pending.
                    let earlier = st.pending.len() - bufs.len().min(st.pending.len());
                    for (d, e) in st.pending.iter_mut().skip(earlier) {
                        *d = e.deadline(now);
                    }
                }
                st.pending.front().and_then(|(d, _)| *d)
            };
            if !bufs.is_empty() {
                if let Err(e) = crate::net::stream::write_all(stream, &mut bufs).await {
                    return Ended::Write(e);
                }
                continue;
            }
            let readable = match deadline {
                Some(d) => tokio::select! {
                    r = stream.readable() => Some(r),
                    _ = self.wake.notified() => continue,
                    _ = tokio::time::sleep_until(d) => None,
                },
                None => tokio::select! {
                    r = stream.readable() => Some(r),
                    _ = self.wake.notified() => continue,
                },
            };
            match readable {
                None => return Ended::Silent,
                Some(Err(e)) => return Ended::Read(e),
                Some(Ok(())) => {}
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return Ended::ClosedByNode,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Ended::Read(e),
            }
            loop {
                match scanner.next_frame(&mut buf) {
                    Ok(Some(frame)) => {
                        if let Err(e) = self.on_frame(frame) {
                            return e;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Ended::Garbled(e),
                }
            }
        }
    }

    fn on_frame(&self, frame: Bytes) -> Result<(), Ended> {
        if let Some(sink) = &self.sink {
            if is_message(&frame) {
                let before = self
                    .state
                    .borrow()
                    .pending
                    .front()
                    .and_then(|(_, e)| match e {
                        Expect::Reply { slot, .. } | Expect::Acks { slot, .. } => {
                            Some(Rc::clone(slot))
                        }
                        Expect::Discard | Expect::Handshake { .. } => None,
                    });
                sink.message(&self.addr, frame, before);
                return Ok(());
            }
            let acking = matches!(
                self.state.borrow().pending.front(),
                Some((_, Expect::Acks { .. }))
            );
            if !acking && first_element(&frame) == Some(b"sunsubscribe") {
                sink.unsubscribed(&self.addr, frame);
                return Ok(());
            }
        }
        let mut st = self.state.borrow_mut();
        let Some((_, front)) = st.pending.front_mut() else {
            return Err(Ended::Unrequested);
        };
        if let Expect::Acks { count, .. } = front {
            // An error (NOPERM from the node's ACL, say) is the command's only reply: it
            // answers the whole command, and no confirmation follows.
            if *count > 1 && !resp::is_error(&frame) {
                *count -= 1;
                return Ok(());
            }
        }
        let Some((_, expect)) = st.pending.pop_front() else {
            return Err(Ended::Unrequested);
        };
        drop(st);
        match expect {
            Expect::Reply { slot, pinned, .. } => {
                if pinned && parse_redirect(&frame, &self.addr).is_some() {
                    let text = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
                    slot.fill(resp::error(&format!(
                        "ERR slotproxy: the transaction's slot is no longer served by {} ({text}); the transaction is aborted",
                        self.addr
                    )));
                } else {
                    slot.fill(frame);
                }
            }
            Expect::Discard => {}
            Expect::Handshake { auth } if resp::is_error(&frame) => {
                return self.refuse(if auth {
                    crate::backend::credentials::refused(&self.addr, &frame)
                } else {
                    let text = String::from_utf8_lossy(frame.get(1..).unwrap_or_default())
                        .trim_end()
                        .to_string();
                    format!("ERR slotproxy: node {} refused HELLO 3 ({text})", self.addr)
                });
            }
            Expect::Handshake { .. } => {}
            Expect::Acks { slot, .. } if resp::is_error(&frame) => {
                if let Some(sink) = &self.sink {
                    sink.refused(&self.addr, &slot);
                }
                slot.fill(frame);
            }
            Expect::Acks { slot, reply, .. } => slot.fill(reply),
        }
        Ok(())
    }
}

/// Why a dedicated connection ended. `Display` is the reason its pending requests' errors
/// and [`Dedicated::closed`] give (every reason of this module, in one place).
#[derive(Debug)]
enum Ended {
    /// The connect failed or timed out.
    Connect(io::Error),
    /// Writing a request failed.
    Write(io::Error),
    /// Reading failed.
    Read(io::Error),
    /// The oldest request's deadline passed with no reply.
    Silent,
    /// The node closed the connection.
    ClosedByNode,
    /// The node sent bytes that are not RESP.
    Garbled(resp::BadReply),
    /// A reply arrived with no request waiting for it: the stream is out of step.
    Unrequested,
    /// The node refused the AUTH or HELLO 3 the connection opened with; the text is the
    /// client's reply, which says why.
    Refused(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Connect(e) => write!(f, "connect: {e}"),
            Ended::Write(e) => write!(f, "write: {e}"),
            Ended::Read(e) => write!(f, "read: {e}"),
            Ended::Silent => f.write_str("no reply in time"),
            Ended::ClosedByNode => f.write_str("closed by the node"),
            Ended::Garbled(e) => write!(f, "{e}"),
            Ended::Unrequested => f.write_str("reply without a request"),
            Ended::Refused(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Ended {}

/// Idle time before a dedicated connection's first keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Time between keepalive probes; after the kernel's count of unanswered probes
/// (`tcp_keepalive_probes`, 9 by default) the connection fails, so a vanished node is noticed
/// within about a minute of silence.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Most idle dedicated connections kept per node for reuse by later blocking commands.
const IDLE_PER_NODE: usize = 8;

/// A worker's dedicated connections: a bound on how many exist at once, and idle ones kept for
/// reuse (blocking commands come and go; opening a connection per BLPOP would cost a handshake
/// each time). Invariants: `live` counts every [`Lease`] not yet dropped, idle ones included;
/// a new connection waits for its connect as long as the `connect_timeout` in force when it is
/// opened (read from the live settings, so `PROXY CONFIG SET` reaches it).
pub struct DedicatedPool {
    max: usize,
    /// Where the live `connect_timeout` is read, and the proxy's dialer (its credentials and
    /// node-facing TLS) taken.
    shared: Arc<crate::shared::Shared>,
    live: Rc<std::cell::Cell<usize>>,
    idle: RefCell<std::collections::HashMap<IdleKey, Vec<Lease>>>,
}

/// Idle connections are kept per node and protocol (RESP2, or RESP3 after HELLO 3).
type IdleKey = (Arc<str>, bool);

/// A dedicated connection counted against its worker's bound while it exists, and against
/// its client's share ([`Quota`]) while the client holds it (not while it sits idle in the
/// pool).
pub struct Lease {
    conn: Dedicated,
    resp3: bool,
    live: Rc<std::cell::Cell<usize>>,
    held: Option<Quota>,
}

/// How many dedicated connections one client holds, so that one client cannot take all of
/// its worker's (`max_dedicated_per_client`). Invariant: counts every [`Lease`] taken with
/// it and not yet dropped or given back.
#[derive(Clone, Default)]
pub struct Quota(Rc<std::cell::Cell<usize>>);

impl Quota {
    /// Connections the client holds now.
    pub fn held(&self) -> usize {
        self.0.get()
    }

    fn claim(&self, max: usize) -> Result<Quota, Refused> {
        if self.0.get() >= max {
            return Err(Refused::Client { max });
        }
        self.0.set(self.0.get() + 1);
        Ok(self.clone())
    }

    fn release(&self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl std::ops::Deref for Lease {
    type Target = Dedicated;
    fn deref(&self) -> &Dedicated {
        &self.conn
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.live.set(self.live.get().saturating_sub(1));
        if let Some(q) = self.held.take() {
            q.release();
        }
    }
}

/// Why no dedicated connection was given; `Display` is the client's reply (the texts of this
/// module's refusals, in one place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The worker holds `max_dedicated_per_worker` of them already.
    Worker {
        /// The limit.
        max: usize,
    },
    /// This client holds `max_dedicated_per_client` of them already.
    Client {
        /// The limit.
        max: usize,
    },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whose, setting, max) = match self {
            Refused::Worker { max } => ("on this worker", "max_dedicated_per_worker", max),
            Refused::Client { max } => ("for this client", "max_dedicated_per_client", max),
        };
        write!(
            f,
            "ERR slotproxy: too many dedicated connections {whose} ({setting} = {max}); blocking commands, transactions and subscriptions each hold one"
        )
    }
}

impl std::error::Error for Refused {}

impl DedicatedPool {
    /// A pool of at most `max` connections, which reads its connect timeout from `shared`'s
    /// live settings.
    pub fn new(max: usize, shared: Arc<crate::shared::Shared>) -> DedicatedPool {
        DedicatedPool {
            max,
            shared,
            live: Rc::new(std::cell::Cell::new(0)),
            idle: RefCell::new(Default::default()),
        }
    }

    /// Dedicated connections that exist now (in use or idle).
    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// A connection to `addr` for one request at a time: an idle one if there is one, else a
    /// new one. `resp3` connections speak RESP3 (HELLO 3 sent first). It counts against
    /// `quota`, which may hold at most `per_client`.
    pub fn take(
        &self,
        addr: &Arc<str>,
        resp3: bool,
        quota: &Quota,
        per_client: usize,
    ) -> Result<Lease, Refused> {
        let held = quota.claim(per_client)?;
        if let Some(list) = self.idle.borrow_mut().get_mut(&(Arc::clone(addr), resp3)) {
            while let Some(mut lease) = list.pop() {
                if lease.idle() {
                    lease.held = Some(held);
                    return Ok(lease);
                }
            }
        }
        self.open_claimed(addr, resp3, None, held)
    }

    /// A new connection that is never shared (transactions, pub/sub), counted against `quota`
    /// like [`DedicatedPool::take`].
    pub fn open(
        &self,
        addr: &Arc<str>,
        resp3: bool,
        sink: Option<Rc<dyn Sink>>,
        quota: &Quota,
        per_client: usize,
    ) -> Result<Lease, Refused> {
        let held = quota.claim(per_client)?;
        self.open_claimed(addr, resp3, sink, held)
    }

    fn open_claimed(
        &self,
        addr: &Arc<str>,
        resp3: bool,
        sink: Option<Rc<dyn Sink>>,
        held: Quota,
    ) -> Result<Lease, Refused> {
        if self.live.get() >= self.max {
            held.release();
            return Err(Refused::Worker { max: self.max });
        }
        self.live.set(self.live.get() + 1);
        let hello = resp3.then(|| Bytes::from_static(crate::route::resp::HELLO3));
        let connect_timeout = self.shared.settings.live.connect_timeout();
        Ok(Lease {
            conn: Dedicated::open(
                Arc::clone(&self.shared.settings.dialer),
                Arc::clone(addr),
                connect_timeout,
                hello,
                sink,
            ),
            resp3,
            live: Rc::clone(&self.live),
            held: Some(held),
        })
    }

    /// Closes the idle connections to nodes `keep` refuses (nodes that left the topology), so
    /// idle connections stay bounded by the cluster's size, not its history.
    pub fn drop_idle_except(&self, keep: impl Fn(&str) -> bool) {
        self.idle.borrow_mut().retain(|(addr, _), _| keep(addr));
    }

    /// Returns a connection after its request completed; kept if it is healthy and idle. Either
    /// way the client no longer holds it.
    pub fn give_back(&self, mut lease: Lease) {
        if let Some(q) = lease.held.take() {
            q.release();
        }
        if !lease.idle() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle
            .entry((Arc::clone(lease.addr()), lease.resp3))
            .or_default();
        list.retain(|l| l.idle());
        if list.len() < IDLE_PER_NODE {
            list.push(lease);
        }
    }
}

/// Whether a frame from a subscribed connection is a message rather than a reply: an array or
/// RESP3 push whose first element is `message`, `pmessage` or `smessage`.
pub fn is_message(frame: &[u8]) -> bool {
    match first_element(frame) {
        Some(b"message") | Some(b"pmessage") | Some(b"smessage") => true,
        // Client-side caching's invalidation push (only the proxy's invalidation
        // connections turn tracking on).
        Some(b"invalidate") => frame.first() == Some(&b'>'),
        _ => false,
    }
}

/// The first element of an array or push frame, when it is a bulk string.
pub fn first_element(frame: &[u8]) -> Option<&[u8]> {
    if !matches!(frame.first(), Some(b'*') | Some(b'>')) {
        return None;
    }
    let header_end = frame.windows(2).position(|w| w == b"\r\n")?;
    let rest = frame.get(header_end + 2..)?;
    if rest.first() != Some(&b'$') {
        return None;
    }
    let len_end = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[1..len_end]).ok()?.parse().ok()?;
    rest.get(len_end + 2..len_end + 2 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_from_replies() {
        assert!(is_message(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"));
        assert!(is_message(
            b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$1\r\nm\r\n"
        ));
        assert!(!is_message(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"));
        assert!(!is_message(b"+PONG\r\n"));
        assert!(!is_message(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"));
        assert_eq!(
            first_element(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"),
            Some(&b"subscribe"[..])
        );
        assert_eq!(first_element(b"*1\r\n:1\r\n"), None);
    }
}
