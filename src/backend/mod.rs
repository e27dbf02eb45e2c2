//! Backend connections: per worker and node, multiplexed connections that carry the pipelined
//! requests of all the worker's clients.
//!
//! Requests queue up while the worker runs its sessions; the writer task wakes after them and
//! sends everything queued in one vectored write (the batch grows with load, by itself), and
//! keeps the reply deadline of the oldest request in flight. Replies are matched to requests in
//! FIFO order by the reader, which is woken only by its socket or a change of link.
//! Invariants: a request enters `inflight` before its bytes can reach the socket, so a reply
//! always finds its request; and when a connection fails, every request on it is answered with
//! an error at once, so no client waits on a dead node.

pub mod credentials;
pub mod dedicated;
pub mod invalidation;
pub mod node_client;
pub mod tracking_table;
pub mod worker;

use crate::local_notify::LocalNotify;
use crate::metrics::stats::{bump, drop_by, NodeStats};
use crate::net::stream::Stream;
use crate::route::dispatch::Call;
use crate::route::resp::{self, ReplyScanner};
use crate::shared::{Shared, Trigger};
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
const READONLY: &[u8] = b"*1\r\n$8\r\nREADONLY\r\n";
const BACKOFF_START: Duration = Duration::from_millis(50);

/// Where a connection hands the replies to its calls: the worker that owns it. Redirects,
/// retries and delivery are the worker's decisions; the connection only matches replies to
/// requests. (A trait, so that this module does not depend on the worker's.)
pub trait ReplyHandler {
    /// `frame` is the reply to `call`, which was sent to `from`.
    fn on_reply(&self, call: Call, frame: Bytes, from: &str);
    /// `call` was sent to a replica for a read (a READONLY connection, see
    /// [`Pool::new`]) and got no reply: the connection failed or timed out, or the replica is
    /// down. The handler may send it elsewhere; by default it fails with `msg`.
    fn on_lost(&self, call: Call, from: &str, msg: &str) {
        let _ = from;
        call.fail(msg);
    }
}

/// An entry in a connection's queues.
enum Pending {
    /// A client's command; its reply goes to the call's target.
    Call(Call),
    /// The `ASKING` sent right before an ASK-redirected command; its `+OK` is dropped.
    Asking,
    /// `HELLO 3`, first on a RESP3 connection; its reply is dropped.
    Hello,
    /// `READONLY`, after the login on a connection for reads from a replica; a refusal fails
    /// the connection.
    ReadOnly,
    /// The proxy's `AUTH` (backend credentials), first on every connection; a refusal fails
    /// the connection with a configuration error.
    Auth(Bytes),
}

impl Pending {
    fn wire(&self) -> Bytes {
        match self {
            Pending::Call(c) => c.wire.clone(),
            Pending::Asking => Bytes::from_static(ASKING),
            Pending::Hello => Bytes::from_static(resp::HELLO3),
            Pending::ReadOnly => Bytes::from_static(READONLY),
            Pending::Auth(wire) => wire.clone(),
        }
    }
    fn fail(self, msg: &str) {
        if let Pending::Call(c) = self {
            c.fail(msg);
        }
    }
}

enum Link {
    /// Not connected; the next request connects.
    Idle,
    /// A connect is under way; requests queue.
    Connecting,
    /// Connected.
    Up,
    /// Failed; requests fail fast until `until`, then the next one reconnects.
    Down { until: Instant, reason: String },
}

struct State {
    link: Link,
    /// Requests not yet written.
    queue: VecDeque<Pending>,
    /// Written requests awaiting their replies, oldest first, with the time they were written.
    /// (The times are [`crate::clock::now_us`] stamps: one subtraction per reply.)
    inflight: VecDeque<(u64, Pending)>,
    /// Bumped whenever the link changes, so tasks of an old link stop.
    generation: u64,
    backoff: Duration,
    /// A reply timed out and the connection was replaced; cleared by the next reply. A second
    /// timeout while set means the node, not one slow command, stopped answering.
    suspect: bool,
}

/// Timeouts a connection needs.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Longest wait for a reply, from the write.
    pub request: Duration,
    /// Longest wait for the TCP connect.
    pub connect: Duration,
    /// Longest pause before reconnecting after a failure.
    pub backoff_max: Duration,
}

impl Timeouts {
    /// The timeouts in force now (they change with `PROXY CONFIG SET`).
    pub fn current(shared: &Shared) -> Timeouts {
        Timeouts {
            request: shared.settings.live.request_timeout(),
            connect: shared.settings.live.connect_timeout(),
            backoff_max: shared.settings.live.backoff_max(),
        }
    }
}

/// The node a pool talks to, as the stats know it.
#[derive(Clone)]
pub struct NodeRef {
    /// Index in [`crate::metrics::stats::NodeRegistry`].
    pub id: u32,
    /// This worker's counters for the node.
    pub stats: Arc<NodeStats>,
    /// Where the live timeouts are read.
    pub shared: Arc<Shared>,
}

/// One multiplexed connection to a node.
pub struct Conn {
    addr: Arc<str>,
    worker: Weak<dyn ReplyHandler>,
    node: NodeRef,
    state: RefCell<State>,
    wake_writer: LocalNotify,
    /// Wakes an idle reader when requests go in flight, so it starts their reply deadline.
    wake_reader: LocalNotify,
    /// Speaks RESP3 (HELLO 3 first on every connect), for clients that said HELLO 3.
    resp3: bool,
    /// The node left the topology: the connection closes once nothing is queued or in flight.
    retiring: Cell<bool>,
    /// Carries reads to a replica: READONLY after the login, and calls it loses go back to
    /// the worker ([`ReplyHandler::on_lost`]) to be served elsewhere.
    readonly: bool,
}

fn link_gauge<'a>(stats: &'a NodeStats, link: &Link) -> Option<&'a std::sync::atomic::AtomicU64> {
    match link {
        Link::Idle => None,
        Link::Connecting => Some(&stats.conns_connecting),
        Link::Up => Some(&stats.conns_up),
        Link::Down { .. } => Some(&stats.conns_down),
    }
}

impl Conn {
    fn new(
        addr: Arc<str>,
        worker: Weak<dyn ReplyHandler>,
        node: NodeRef,
        resp3: bool,
        readonly: bool,
    ) -> Rc<Conn> {
        Rc::new(Conn {
            addr,
            worker,
            node,
            state: RefCell::new(State {
                link: Link::Idle,
                queue: VecDeque::new(),
                inflight: VecDeque::new(),
                generation: 0,
                backoff: BACKOFF_START,
                suspect: false,
            }),
            wake_writer: LocalNotify::new(),
            wake_reader: LocalNotify::new(),
            resp3,
            retiring: Cell::new(false),
            readonly,
        })
    }

    /// Closes the connection if nothing is queued or in flight; returns whether it did.
    fn close_if_idle(&self) -> bool {
        let mut st = self.state.borrow_mut();
        if !st.queue.is_empty() || !st.inflight.is_empty() {
            return false;
        }
        st.generation += 1;
        self.set_link(&mut st, Link::Idle);
        drop(st);
        self.wake_writer.notify_one();
        self.wake_reader.notify_one();
        true
    }

    /// The node left the topology: close now if idle, else after the last reply.
    fn retire(&self) {
        self.retiring.set(true);
        self.close_if_idle();
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts::current(&self.node.shared)
    }

    /// Changes the link, keeping the connection-state gauges in step.
    fn set_link(&self, st: &mut State, new: Link) {
        if let Some(g) = link_gauge(&self.node.stats, &st.link) {
            drop_by(g, 1);
        }
        if let Some(g) = link_gauge(&self.node.stats, &new) {
            bump(g, 1);
        }
        st.link = new;
    }

    /// Queues `call` (preceded by `ASKING` when `asking`), connecting first if needed. While the
    /// node is known to be down the call fails at once.
    pub fn send(self: &Rc<Self>, call: Call, asking: bool) {
        let mut st = self.state.borrow_mut();
        match &st.link {
            Link::Down { until, reason } if Instant::now() < *until => {
                let msg = format!(
                    "ERR slotproxy: backend {} is unreachable ({reason}); retrying in {}ms",
                    self.addr,
                    until.saturating_duration_since(Instant::now()).as_millis()
                );
                drop(st);
                bump(&self.node.stats.failed, 1);
                self.lose(Pending::Call(call), &msg);
                return;
            }
            Link::Idle | Link::Down { .. } => {
                self.set_link(&mut st, Link::Connecting);
                let gen = st.generation;
                tokio::task::spawn_local(Rc::clone(self).connect(gen));
            }
            Link::Connecting | Link::Up => {}
        }
        // The writer drains the whole queue whenever it runs, so it needs waking only when the
        // queue stops being empty; a wake per request would cost a notify per request.
        let was_empty = st.queue.is_empty();
        if asking {
            st.queue.push_back(Pending::Asking);
        }
        st.queue.push_back(Pending::Call(call));
        drop(st);
        if was_empty {
            self.wake_writer.notify_one();
        }
    }

    /// Requests queued or awaiting replies.
    pub fn load(&self) -> usize {
        let st = self.state.borrow();
        st.queue.len() + st.inflight.len()
    }

    async fn connect(self: Rc<Self>, gen: u64) {
        let connect_timeout = self.timeouts().connect;
        let dialer = Arc::clone(&self.node.shared.settings.dialer);
        let stream = match Stream::connect(&dialer, &self.addr, connect_timeout).await {
            Ok(s) => Rc::new(s),
            Err(e) => return self.fail(gen, format!("connect: {e}")),
        };
        {
            let mut st = self.state.borrow_mut();
            if st.generation != gen {
                return;
            }
            let was_down = matches!(st.link, Link::Down { .. }) || st.backoff > BACKOFF_START;
            self.set_link(&mut st, Link::Up);
            st.backoff = BACKOFF_START;
            // Before anything queued while connecting: AUTH, then HELLO 3, then READONLY.
            if self.readonly {
                st.queue.push_front(Pending::ReadOnly);
            }
            if self.resp3 {
                st.queue.push_front(Pending::Hello);
            }
            if let Some(auth) = dialer.auth() {
                st.queue.push_front(Pending::Auth(auth.clone()));
            }
            if was_down {
                tracing::info!(node = %self.addr, "backend node is reachable again");
            }
        }
        tracing::debug!(node = %self.addr, "backend connected");
        tokio::task::spawn_local(Rc::clone(&self).write_loop(Rc::clone(&stream), gen));
        tokio::task::spawn_local(self.read_loop(stream, gen));
    }

    /// Marks the link failed: every queued and in-flight request is answered with an error, and
    /// the node is left alone for the back-off period.
    fn fail(&self, gen: u64, reason: String) {
        let (inflight, queue) = {
            let mut st = self.state.borrow_mut();
            if st.generation != gen {
                return;
            }
            st.generation += 1;
            st.suspect = false;
            let quiet = st.inflight.is_empty() && st.queue.is_empty() && reason == "closed";
            let was_up = matches!(st.link, Link::Up);
            let link = if quiet {
                // The node closed an idle connection; reconnect on the next request.
                Link::Idle
            } else {
                let backoff = st.backoff;
                st.backoff = (backoff * 2).min(self.timeouts().backoff_max);
                if was_up || backoff == BACKOFF_START {
                    tracing::warn!(node = %self.addr, %reason, "backend node down");
                }
                Link::Down {
                    until: Instant::now() + backoff,
                    reason: reason.clone(),
                }
            };
            self.set_link(&mut st, link);
            (
                std::mem::take(&mut st.inflight),
                std::mem::take(&mut st.queue),
            )
        };
        self.wake_writer.notify_one();
        self.wake_reader.notify_one();
        let failed = inflight
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Call(_)))
            .count()
            + queue
                .iter()
                .filter(|p| matches!(p, Pending::Call(_)))
                .count();
        bump(&self.node.stats.failed, failed as u64);
        if !inflight.is_empty() || !queue.is_empty() {
            tracing::warn!(node = %self.addr, %reason, failed = inflight.len() + queue.len(), "backend connection failed");
        }
        let lost = format!(
            "ERR slotproxy: connection to backend {} failed before its reply ({reason}); the command may or may not have run",
            self.addr
        );
        for (_, p) in inflight {
            self.lose(p, &lost);
        }
        let unsent = format!(
            "ERR slotproxy: backend {} is unreachable ({reason})",
            self.addr
        );
        for p in queue {
            self.lose(p, &unsent);
        }
        self.node
            .shared
            .topology
            .trigger_refresh_for(Trigger::ConnectionLost);
    }

    /// The oldest request got no reply within `request_timeout`. A node that is busy (a long
    /// script, a slow `KEYS`) still answers other connections, `-BUSY` during a script, so one
    /// slow command must not mark it down for everyone: the requests already written here
    /// (stuck behind it in the node's queue for this connection) are answered with an error,
    /// the connection is dropped, and what was not written yet goes out on a fresh connection
    /// at once. Only when that connection also times out before any reply is the node down.
    fn timed_out(self: &Rc<Self>, gen: u64, reason: String) {
        let inflight = {
            let mut st = self.state.borrow_mut();
            if st.generation != gen || st.suspect {
                drop(st);
                return self.fail(gen, reason);
            }
            st.generation += 1;
            st.suspect = true;
            let inflight = std::mem::take(&mut st.inflight);
            if st.queue.is_empty() {
                self.set_link(&mut st, Link::Idle);
            } else {
                self.set_link(&mut st, Link::Connecting);
                let gen = st.generation;
                tokio::task::spawn_local(Rc::clone(self).connect(gen));
            }
            inflight
        };
        self.wake_writer.notify_one();
        self.wake_reader.notify_one();
        let calls: Vec<Pending> = inflight
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| matches!(p, Pending::Call(_)))
            .collect();
        bump(&self.node.stats.failed, calls.len() as u64);
        tracing::warn!(node = %self.addr, %reason, failed = calls.len(), "backend reply timed out; replacing the connection");
        let lost = format!(
            "ERR slotproxy: no reply from backend {} within request_timeout ({reason}); the command may or may not have run",
            self.addr
        );
        for p in calls {
            self.lose(p, &lost);
        }
    }

    /// Answers a request this connection could not carry: a read on a replica connection goes
    /// back to the worker, to be served elsewhere; anything else fails with `msg`.
    fn lose(&self, p: Pending, msg: &str) {
        match (p, self.readonly, self.worker.upgrade()) {
            (Pending::Call(c), true, Some(w)) => w.on_lost(c, &self.addr, msg),
            (p, ..) => p.fail(msg),
        }
    }

    /// Sends what is queued, one vectored write per batch, and keeps the reply deadline of the
    /// oldest request in flight.
    ///
    /// The deadline lives here, not in the reader, because this task already runs when
    /// requests go in flight: a reader that had to be woken to start the clock cost a wake and
    /// a task poll per request whenever the connection was idle (most requests at pipeline 1).
    async fn write_loop(self: Rc<Self>, stream: Rc<Stream>, gen: u64) {
        use std::future::Future;
        use std::task::Poll;
        let mut bufs: Vec<Bytes> = Vec::new();
        // One timer for the connection's life, moved only when it fired or must fire sooner:
        // a timer armed and dropped per batch cost the worker more than the write itself. It
        // may fire early (the request it was armed for has been answered since); the oldest
        // request in flight is checked before anything is failed.
        let sleep = tokio::time::sleep_until(Instant::now() + Duration::from_secs(86_400));
        tokio::pin!(sleep);
        // The stamp the timer is armed for: compared as a number, converted to an instant
        // only when the timer moves.
        let mut armed_us = u64::MAX;
        // Whether the timer has been polled since it last moved, so it holds this task's
        // waker: after that one poll, `is_elapsed` (a load) says whether it fired, and the
        // timer's full poll (budget and waker bookkeeping) is not repeated at every turn.
        let mut sleep_polled = false;
        loop {
            let deadline = {
                let mut st = self.state.borrow_mut();
                if st.generation != gen {
                    return;
                }
                let st = &mut *st;
                if !st.queue.is_empty() {
                    // One clock read per batch written, none for a turn that finds the queue
                    // empty (every write is followed by one).
                    let now = crate::clock::now_us();
                    while let Some(p) = st.queue.pop_front() {
                        bufs.push(p.wire());
                        st.inflight.push_back((now, p));
                    }
                }
                st.inflight
                    .front()
                    .map(|(t, _)| t.saturating_add(self.timeouts().request.as_micros() as u64))
            };
            if let Some(d) = deadline {
                if sleep.is_elapsed() || armed_us > d {
                    armed_us = d;
                    let at = crate::clock::instant_at(
                        d,
                        std::time::Instant::now(),
                        crate::clock::now_us(),
                    );
                    sleep.as_mut().reset(Instant::from_std(at));
                    sleep_polled = false;
                }
            }
            // The write, or with nothing to write the next wake, raced against the deadline
            // (polled only while something is in flight): a node that stops reading must time
            // out even while a write waits for room.
            let write = async {
                if !bufs.is_empty() {
                    crate::net::stream::write_all(&stream, &mut bufs).await
                } else if stream.wants_flush() {
                    // TLS bytes a timed-out turn left unsent.
                    stream.flush().await
                } else {
                    self.wake_writer.notified().await;
                    Ok(())
                }
            };
            tokio::pin!(write);
            let done = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = write.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if deadline.is_some() {
                    let fired = if sleep_polled {
                        sleep.is_elapsed()
                    } else {
                        // A poll refused for lack of budget stores no waker: poll again then.
                        sleep_polled = tokio::task::coop::has_budget_remaining();
                        sleep.as_mut().poll(cx).is_ready()
                    };
                    if fired {
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending
            });
            match done.await {
                Some(Ok(())) => continue,
                Some(Err(e)) => return self.fail(gen, format!("write: {e}")),
                None => {}
            }
            // The timer fired: is the oldest request in flight really overdue?
            let request_timeout = self.timeouts().request;
            let expired = {
                let st = self.state.borrow();
                if st.generation != gen {
                    return;
                }
                st.inflight.front().is_some_and(|(t, _)| {
                    t.saturating_add(request_timeout.as_micros() as u64) <= crate::clock::now_us()
                })
            };
            if expired {
                let ms = request_timeout.as_millis();
                return self.timed_out(gen, format!("no reply within {ms}ms"));
            }
            // Not overdue: a blocked write resumes where it was on the next turn, as `bufs`
            // keeps what was not written.
        }
    }

    /// Reads replies and hands each to the request it answers (FIFO). Woken by the socket, or
    /// by `wake_reader` when the link changes (so a reader of an old link stops).
    async fn read_loop(self: Rc<Self>, stream: Rc<Stream>, gen: u64) {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut scanner = ReplyScanner::default();
        loop {
            if self.state.borrow().generation != gen {
                return;
            }
            let ready = std::future::poll_fn(|cx| {
                use std::task::Poll;
                if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                    return Poll::Ready(Some(r));
                }
                if self.wake_reader.poll_notified(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            match ready {
                None => continue,
                Some(Err(e)) => return self.fail(gen, format!("read: {e}")),
                Some(Ok(())) => {}
            }
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            let room = buf.capacity() - buf.len();
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return self.fail(gen, "closed".into()),
                Ok(n) => {
                    if n < room {
                        stream.drained();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return self.fail(gen, format!("read: {e}")),
            }
            // One clock read per read batch: every reply in it arrived by now.
            let now = crate::clock::now_us();
            {
                let mut st = self.state.borrow_mut();
                if st.suspect && !buf.is_empty() {
                    st.suspect = false;
                }
            }
            let stats = &self.node.stats;
            loop {
                let frame = match scanner.next_frame(&mut buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return self.fail(gen, e.to_string()),
                };
                let pending = {
                    let mut st = self.state.borrow_mut();
                    if st.generation != gen {
                        return;
                    }
                    st.inflight.pop_front()
                };
                match pending {
                    Some((written, Pending::Call(call))) => {
                        let us = now.saturating_sub(written);
                        stats.latency.record(us);
                        bump(&stats.replies, 1);
                        if resp::is_error(&frame) {
                            bump(&stats.error_replies, 1);
                        }
                        call.target
                            .note_backend(u32::try_from(us).unwrap_or(u32::MAX), self.node.id);
                        match self.worker.upgrade() {
                            Some(w) => w.on_reply(call, frame, &self.addr),
                            None => call.target.deliver(frame),
                        }
                    }
                    Some((_, Pending::Asking)) => {
                        if resp::is_error(&frame) {
                            tracing::warn!(node = %self.addr, reply = ?frame, "ASKING refused");
                        }
                    }
                    Some((_, Pending::ReadOnly)) => {
                        if resp::is_error(&frame) {
                            let text = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
                            return self.fail(gen, format!("READONLY refused: {text}"));
                        }
                    }
                    Some((_, Pending::Hello)) => {
                        if resp::is_error(&frame) {
                            tracing::warn!(node = %self.addr, reply = ?frame, "HELLO 3 refused");
                        }
                    }
                    Some((_, Pending::Auth(_))) => {
                        if resp::is_error(&frame) {
                            let msg = crate::backend::credentials::refused(&self.addr, &frame);
                            tracing::error!(node = %self.addr, "{msg}");
                            return self.fail(gen, msg);
                        }
                    }
                    None => return self.fail(gen, "reply without a request".into()),
                }
            }
            if self.retiring.get() && self.close_if_idle() {
                return;
            }
        }
    }
}

/// A worker's connections to one node.
pub struct Pool {
    conns: Vec<Rc<Conn>>,
    /// The same number of RESP3 connections (opened only when a RESP3 client uses them).
    conns3: Vec<Rc<Conn>>,
    next: Cell<usize>,
}

impl Pool {
    /// `count` connections (opened lazily) to `addr`, counting into `node`'s stats.
    /// `readonly`: connections for reads from a replica (READONLY after the login; a call
    /// they lose goes back to the worker, [`ReplyHandler::on_lost`]).
    pub fn new(
        addr: Arc<str>,
        worker: Weak<dyn ReplyHandler>,
        node: NodeRef,
        count: usize,
        readonly: bool,
    ) -> Pool {
        let conns = |resp3: bool| -> Vec<Rc<Conn>> {
            (0..count.max(1))
                .map(|_| {
                    Conn::new(
                        Arc::clone(&addr),
                        worker.clone(),
                        node.clone(),
                        resp3,
                        readonly,
                    )
                })
                .collect()
        };
        Pool {
            conns: conns(false),
            conns3: conns(true),
            next: Cell::new(0),
        }
    }

    /// Sends a call on the pool's connections, round-robin. A call followed by ASKING stays on
    /// one connection with it.
    pub fn send(&self, call: Call, asking: bool) {
        let i = self.next.get();
        self.next.set((i + 1) % self.conns.len());
        let conns = if call.resp3 {
            &self.conns3
        } else {
            &self.conns
        };
        conns[i].send(call, asking);
    }

    /// Connections per protocol; `send` rotates through them, so `width` calls in a row
    /// reach each connection once.
    pub fn width(&self) -> usize {
        self.conns.len()
    }

    /// The node left the topology: each connection closes once its last reply is in.
    pub fn retire(&self) {
        for c in self.conns.iter().chain(&self.conns3) {
            c.retire();
        }
    }

    /// Whether the node registry dropped this pool's node (it left the topology).
    pub fn retired(&self) -> bool {
        self.conns.first().is_some_and(|c| {
            c.node
                .stats
                .retired
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Requests queued or in flight on all of the pool's connections.
    pub fn load(&self) -> usize {
        self.conns
            .iter()
            .chain(&self.conns3)
            .map(|c| c.load())
            .sum()
    }
}
