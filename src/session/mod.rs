//! One client connection: read, parse, route, send, collect replies in order, write back.
//!
//! Invariants: replies leave in exactly the order requests arrived (each request owns a
//! [`ReplySlot`] in `queue`, filled whenever its backend answers); a client that pipelines more
//! than `max_pipeline` requests is not read from until replies drain; one whose unread replies
//! exceed `max_pending_reply_bytes` is disconnected. Either way it stalls alone: the worker and
//! the shared backend connections keep serving everyone else.
//!
//! What cannot share a multiplexed connection gets one of its own: blocking commands run as
//! tasks of this session on leased connections (aborted when the client leaves), transactions
//! live in `tx`, subscriptions in `pubsub`. A request CLIENT PAUSE holds stops the client's
//! parsing and reading until the pause lets it go (`hold`).

pub mod blocking;
pub mod clients;
mod cluster_wide;
mod config_cmd;
pub mod cross_slot;
mod fence;
mod gather;
mod hold;
pub mod local;
mod login;
pub mod monitor;
pub mod observe;
pub mod pause;
mod pubsub;
mod reads;
mod replies;
mod reply_mode;
mod scan;
pub mod scratch;
mod tracking;
mod tx;
pub mod unblock;
mod wait;

use crate::admin;
use crate::backend::dedicated::{Lease, Quota};
use crate::backend::worker::Worker;
use crate::local_notify::LocalNotify;
use crate::net::stream::Stream;
use crate::route::dispatch::{Call, Dest, Merge, ReplySlot, Target};
use crate::route::protocol::RequestParser;
use crate::route::replica_choice::ReadFrom;
use crate::route::resp;
use crate::route::router::{self, Local, Route};
use crate::shared::ClientSeat;
use bytes::{Bytes, BytesMut};
use local::ClientState;
use reply_mode::ReplyMode;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

const READ_CHUNK: usize = 16 * 1024;

/// Completes the TLS handshake of a client from the TLS listener (within
/// `HANDSHAKE_TIMEOUT`, or `connect_timeout` if longer), then serves it like any other. A failed handshake (a plain client on the TLS port, a
/// certificate the CA did not sign) closes the connection and is counted. `seat` counts the
/// client on its worker until the connection is gone.
pub async fn serve_tls(
    worker: Rc<Worker>,
    tcp: tokio::net::TcpStream,
    id: u64,
    acceptor: Arc<tokio_rustls::TlsAcceptor>,
    seat: ClientSeat,
) {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let timeout = worker
        .shared
        .settings
        .live
        .connect_timeout()
        .max(HANDSHAKE_TIMEOUT);
    match Stream::accept_tls(tcp, &acceptor, timeout).await {
        Ok(stream) => serve(worker, stream, id, seat).await,
        Err(e) => {
            worker
                .shared
                .metrics
                .tls_handshake_failures
                .fetch_add(1, Relaxed);
            tracing::info!(client = id, %peer, error = %e, "TLS handshake failed; connection closed");
        }
    }
}

/// The least time a TLS client gets for its handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves one client until it disconnects, quits, or breaks a limit. `seat` counts the client
/// on its worker; it is given up when this returns (or is dropped unfinished).
pub async fn serve(worker: Rc<Worker>, stream: Stream, id: u64, seat: ClientSeat) {
    let cfg = worker.shared.settings.live.get();
    let peer = stream.peer_addr().ok();
    let live = {
        use std::os::fd::AsRawFd;
        let text =
            |a: io::Result<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        worker.shared.registries.clients.add(
            id,
            peer.map(|a| a.to_string()).unwrap_or_default(),
            text(stream.local_addr()),
            i64::from(stream.tcp().as_raw_fd()),
        )
    };
    let mut s = Session {
        parser: RequestParser::new(cfg.limits()),
        max_pipeline: cfg.max_pipeline,
        max_out: cfg.max_pending_reply_bytes,
        obs: crate::session::observe::SessionObs::new(&worker),
        worker: Rc::clone(&worker),
        stream,
        client: ClientState {
            id,
            name: None,
            resp3: false,
            user: None,
            peer,
        },
        acl: worker.shared.registries.users.active(),
        // Lent by the worker at each read and given back once nothing is left to parse
        // (`read`): a client between requests holds no read buffer.
        rbuf: BytesMut::new(),
        queue: VecDeque::new(),
        out: VecDeque::new(),
        out_bytes: 0,
        held: Rc::new(std::cell::Cell::new(0)),
        peak_out: 0,
        signal: Rc::new(LocalNotify::new()),
        closing: false,
        unparsed: false,
        fan_turns: 0,
        tx: tx::TxState::default(),
        subs: None,
        tasks: Vec::new(),
        retired: Vec::new(),
        quota: Quota::default(),
        sub_due: Rc::new(std::cell::Cell::new(false)),
        live,
        touched: wait::Touched::default(),
        touched_resp3: false,
        wait_last: None,
        reply_mode: ReplyMode::default(),
        blocked_ops: None,
        paused: None,
        fenced: None,
        pause_word: 0,
        tracking: None,
        monitored: false,
        monitor: None,
        reads: reads::Reads::new(&cfg),
        read_now: ReadFrom::Master,
        read_only_now: false,
    };
    if s.acl {
        s.client.user = s.initial_login();
        if let Some(u) = &s.client.user {
            worker.shared.registries.clients.set_user(id, &u.name);
        }
        s.sync_read_user();
    }
    s.parser
        .set_unauthenticated(s.acl && s.client.user.is_none());
    worker.register_session(id, &s.signal);
    std::future::poll_fn(|cx| {
        s.live.register_waker(cx.waker());
        std::task::Poll::Ready(())
    })
    .await;
    if let Err(e) = s.run().await {
        tracing::debug!(client = id, error = %e, "client connection ended with an error");
    }
    // A blocked command's task holds its connection: aborting it closes that connection, and
    // the node forgets the blocked client.
    for t in s.tasks.drain(..) {
        t.abort();
    }
    s.tracking_off();
    s.signal.forget_waiter();
    worker.unregister_session(id);
    worker.shared.registries.clients.remove(id);
    for slot in s.queue.drain(..) {
        s.obs.dropped(&worker, &slot);
    }
    if s.fenced.take().is_some_and(|f| f.is_request()) {
        // Read but never sent: no longer in flight.
        s.obs.no_reply(&worker);
    }
    s.obs.end(&worker, s.out_bytes);
    if s.peak_out.max(s.out_bytes + s.held.get()) >= crate::memory::TRIM_AFTER_BYTES {
        worker.shared.trimmer.request();
    }
    // The client is gone: it leaves the count last, as it was counted first.
    drop(seat);
}

struct Session {
    worker: Rc<Worker>,
    stream: Stream,
    client: ClientState,
    parser: RequestParser,
    rbuf: BytesMut,
    /// Replies in request order; the head is written as soon as it is filled.
    queue: VecDeque<Rc<ReplySlot>>,
    /// Reply bytes ready to write, in order.
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Bytes of replies that arrived but still sit in `queue` (behind an unanswered request,
    /// or not collected yet); with `out_bytes` they count toward the output limits, so a
    /// request that is never answered cannot make the proxy hold unbounded replies after it.
    held: Rc<std::cell::Cell<usize>>,
    /// The largest backlog (`out_bytes + held`) since it was last empty; when a backlog of
    /// [`crate::memory::TRIM_AFTER_BYTES`] or more is gone, the freed memory is handed back.
    peak_out: usize,
    /// Woken whenever one of this client's replies arrives.
    signal: Rc<LocalNotify>,
    /// QUIT or a protocol error: read no more, close once everything is written.
    closing: bool,
    /// `rbuf` may hold complete requests not parsed yet (parsing paused at the pipeline cap).
    unparsed: bool,
    max_pipeline: usize,
    max_out: usize,
    /// RANDOMKEY requests so far, to rotate which master is asked first.
    fan_turns: usize,
    /// Transaction and WATCH state.
    tx: tx::TxState,
    /// Subscriptions, once the client subscribed to anything.
    subs: Option<Box<pubsub::PubSub>>,
    /// Tasks working for this client (blocking commands, timers); aborted when it leaves.
    tasks: Vec<tokio::task::AbortHandle>,
    /// Dedicated connections released but still awaiting replies; with whether they may be
    /// reused.
    retired: Vec<(Lease, bool)>,
    /// The dedicated connections this client holds (`max_dedicated_per_client`).
    quota: Quota,
    /// Set by the re-subscription timer when it fires.
    sub_due: Rc<std::cell::Cell<bool>>,
    /// This client's entry in the registry (CLIENT LIST/KILL).
    live: Arc<crate::session::clients::Live>,
    /// Slots this client sent keyed commands to (a bit each), for WAIT.
    touched: wait::Touched,
    /// Some of those commands went on the RESP3 connections.
    touched_resp3: bool,
    /// The last WAIT's task: the next WAIT starts polling once it is done.
    wait_last: Option<tokio::task::JoinHandle<()>>,
    /// CLIENT REPLY ON / OFF / SKIP.
    reply_mode: ReplyMode,
    /// Users are configured: every request is checked against the client's user.
    acl: bool,
    /// Stats, slow log, live limits and shutdown state (see [`crate::session::observe`]).
    obs: crate::session::observe::SessionObs,
    /// This client's blocking commands and WAITs while they wait, for CLIENT UNBLOCK.
    blocked_ops: Option<Rc<unblock::Ops>>,
    /// The request CLIENT PAUSE holds, if any: nothing after it is parsed until it goes.
    paused: Option<Box<hold::Held>>,
    /// A request held until every earlier one is answered (see [`fence`]): nothing after it
    /// is parsed until it goes.
    fenced: Option<Box<fence::Fenced>>,
    /// The CLIENT PAUSE word read for the current batch (0: no pause, nothing to check).
    pause_word: u64,
    /// CLIENT TRACKING state; `None` for the clients that do not track (one branch each).
    tracking: Option<Box<tracking::Tracking>>,
    /// Whether monitors existed when the current batch began (see [`monitor`]).
    monitored: bool,
    /// This client's MONITOR state, once it needed one.
    monitor: Option<Box<monitor::Side>>,
    /// Where this connection's reads go (`read_from`, READONLY / READWRITE).
    reads: reads::Reads,
    /// Where the request being dispatched may be read from: `Master` unless `reads` allows
    /// replicas and the request is a read outside a transaction (see [`reads`]).
    read_now: ReadFrom,
    /// Whether the request being dispatched is flagged read-only, so WAIT need not know its
    /// slot. (Recording every request's slot cost a cache miss per request in the 2 KB bit
    /// set once a client had touched many slots: 5% of a worker's cycles with 50 clients.)
    read_only_now: bool,
}

enum Event {
    Replies,
    Readable(io::Result<()>),
    /// Another client asked something of this one ([`clients::Live::attention`]).
    Attention(u8),
    Writable(io::Result<()>),
}

impl Session {
    async fn run(&mut self) -> io::Result<()> {
        loop {
            self.reload_settings();
            if self.obs.aborted() {
                // Shutdown deadline: whatever is still unanswered gets an error saying so.
                if self.paused.take().is_some()
                    || self.fenced.take().is_some_and(|f| f.is_request())
                {
                    self.push_ready(resp::error(crate::session::observe::SHUTDOWN_UNANSWERED));
                }
                for slot in &self.queue {
                    slot.fill(resp::error(crate::session::observe::SHUTDOWN_UNANSWERED));
                }
                self.collect_ready();
                let _ = self.flush();
                // Boxed: only closing clients need its state, and inline it would make every
                // idle session's task larger.
                Box::pin(crate::session::observe::linger(&mut self.stream)).await;
                return Ok(());
            }
            if (self.unparsed || self.holding())
                && !self.closing
                && self.queue.len() < self.max_pipeline
            {
                self.process_buffer();
            }
            if self.subs.is_some() {
                self.sub_maintain();
            }
            self.collect_ready();
            self.reap_retired();
            if !self.out.is_empty() {
                self.flush()?;
            }
            let pending = self.out_bytes + self.held.get();
            if pending > self.peak_out {
                self.peak_out = pending;
            } else if pending == 0 && self.peak_out >= crate::memory::TRIM_AFTER_BYTES {
                self.peak_out = 0;
                self.worker.shared.trimmer.request();
            }
            if pending > self.max_out {
                self.obs.cut(
                    &self.worker,
                    &self.stream,
                    self.client.id,
                    pending,
                    "max_pending_reply_bytes",
                );
                return Ok(());
            }
            if (self.subs.is_some() || self.is_monitor())
                && pending > self.worker.shared.settings.config.max_pubsub_reply_bytes
            {
                self.obs.cut(
                    &self.worker,
                    &self.stream,
                    self.client.id,
                    pending,
                    "max_pubsub_reply_bytes",
                );
                return Ok(());
            }
            if self.closing
                && self.queue.is_empty()
                && self.out.is_empty()
                && !self.stream.wants_flush()
            {
                return Ok(());
            }
            // Shutting down: read nothing more, finish what was read, then close.
            let draining = self.obs.draining();
            if draining
                && !self.unparsed
                && !self.holding()
                && self.queue.is_empty()
                && self.out.is_empty()
            {
                // Boxed: only closing clients need its state, and inline it would make every
                // idle session's task larger.
                Box::pin(crate::session::observe::linger(&mut self.stream)).await;
                return Ok(());
            }
            if self.unparsed
                && !self.holding()
                && !self.closing
                && self.queue.len() < self.max_pipeline
            {
                // Replies drained without a wake-up (the proxy's own replies are ready at once,
                // and a burst of backend replies wakes the session only once): the requests
                // held back at the pipeline cap must be parsed now, as nothing else will.
                continue;
            }
            self.return_idle_buffer();
            let can_read = !self.closing
                && !draining
                && !self.unparsed
                && !self.holding()
                && self.queue.len() < self.max_pipeline;
            let want_write = !self.out.is_empty() || self.stream.wants_flush();
            // One poll for everything the session waits on (replies, CLIENT KILL and
            // UNBLOCK, the socket): no future is built and dropped per turn.
            let event = {
                let signal = &*self.signal;
                let stream = &self.stream;
                let live = &self.live;
                std::future::poll_fn(|cx| {
                    use std::task::Poll;
                    if signal.poll_notified(cx).is_ready() {
                        return Poll::Ready(Event::Replies);
                    }
                    let attention = live.attention.load(Relaxed);
                    if attention != 0 {
                        return Poll::Ready(Event::Attention(attention));
                    }
                    if can_read {
                        if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                            return Poll::Ready(Event::Readable(r));
                        }
                    }
                    if want_write {
                        if let Poll::Ready(r) = stream.poll_write_ready(cx) {
                            return Poll::Ready(Event::Writable(r));
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            match event {
                Event::Replies => {}
                Event::Attention(a) if a & clients::KILLED != 0 => {
                    tracing::info!(client = self.client.id, "client killed by CLIENT KILL");
                    return Ok(());
                }
                Event::Attention(a) if !self.monitor_attention(a) => return Ok(()),
                Event::Attention(a) => {
                    if a & clients::UNBLOCK != 0 {
                        self.serve_unblocks();
                    }
                    self.take_invalidations();
                }
                Event::Writable(r) => r?,
                Event::Readable(r) => {
                    r?;
                    if !self.read()? && !self.half_closed() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Picks up live setting changes (`PROXY CONFIG SET`, SIGHUP) before the next requests.
    fn reload_settings(&mut self) {
        if let Some(limits) = self.obs.reload(&self.worker) {
            self.max_pipeline = limits.max_pipeline;
            self.max_out = limits.max_pending_reply_bytes;
            self.parser.set_limits(limits.limits());
            self.reads.reload(&limits);
            self.read_now = ReadFrom::Master;
        }
    }

    /// The client shut down its writing side (EOF). Like Redis, the replies to what it sent
    /// still go out before the connection closes (`printf 'SET k v' | nc -N`): returns true
    /// when the session should stay to deliver them. It does not stay for a blocked command,
    /// a WAIT or subscriptions, whose replies may never come: the client may have closed
    /// altogether, and nothing but a write would tell.
    fn half_closed(&mut self) -> bool {
        let waiting = self.tasks.iter().any(|t| !t.is_finished());
        if waiting || self.subs.is_some() || (self.queue.is_empty() && self.out.is_empty()) {
            return false;
        }
        self.closing = true;
        true
    }

    /// Reads what the socket has and handles the complete requests. Returns false at EOF.
    fn read(&mut self) -> io::Result<bool> {
        self.reload_settings();
        if self.rbuf.capacity() == 0 {
            self.rbuf = self.worker.lend_read_buffer();
        }
        scratch::unpark(&mut self.queue, &mut self.out);
        let want = READ_CHUNK.max(self.parser.needed(self.rbuf.len()));
        if self.rbuf.capacity() - self.rbuf.len() < want {
            self.rbuf.reserve(want);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                // One clock read per read: it times the requests and dates the activity.
                let at = self.obs.read(&self.worker, n);
                let since_us = at.saturating_sub(self.worker.shared.metrics.started_us);
                self.live.last_active_ms.store(since_us / 1_000, Relaxed);
                if n < room {
                    self.stream.drained();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
        self.process_buffer();
        Ok(true)
    }

    /// Gives the read buffer back to the worker when the client is between requests: nothing
    /// half-read and nothing in flight. In flight, requests' bytes still share the buffer
    /// (they are slices of it), and lending it out then would make the next reader allocate.
    fn return_idle_buffer(&mut self) {
        if self.rbuf.capacity() > 0 && self.rbuf.is_empty() && self.queue.is_empty() {
            self.worker
                .return_read_buffer(std::mem::take(&mut self.rbuf));
            if self.out.is_empty() && !self.unparsed {
                scratch::park(
                    std::mem::take(&mut self.queue),
                    std::mem::take(&mut self.out),
                );
            }
        }
    }

    /// Parses and dispatches buffered requests until the buffer holds no complete request or
    /// the pipeline cap is reached (or CLIENT PAUSE holds one: then nothing after it).
    fn process_buffer(&mut self) {
        scratch::with_request(|req| {
            self.parser.swap_ranges(&mut req.ranges);
            self.process_with(req);
            self.parser.swap_ranges(&mut req.ranges);
        })
    }

    /// [`Session::process_buffer`] with the thread's request vectors.
    fn process_with(&mut self, req: &mut scratch::Request) {
        // One relaxed load per batch each: whether a CLIENT PAUSE is in force at all, and
        // whether anyone monitors.
        self.pause_word = self.worker.shared.registries.pause.word();
        self.monitored = self.worker.shared.registries.monitors.active();
        if let Some(h) = self.paused.take_if(|h| h.released() || self.obs.draining()) {
            let hold::Held { args, wire, .. } = *h;
            req.args = args;
            self.request(req, wire);
        }
        if let Some(wire) = self.release_fenced(&mut req.args) {
            self.request(req, wire);
        }
        if self.holding() {
            return;
        }
        self.unparsed = false;
        while !self.closing {
            if self.queue.len() >= self.max_pipeline {
                self.unparsed = !self.rbuf.is_empty();
                return;
            }
            match self.parser.parse_into(&mut self.rbuf, &mut req.args) {
                Ok(Some(raw)) => {
                    self.worker.shared.metrics.workers[self.worker.index]
                        .commands
                        .fetch_add(1, Relaxed);
                    let wire = match raw {
                        Some(raw) => raw,
                        None => resp::encode_command(&req.args).freeze(),
                    };
                    self.request(req, wire);
                    if self.holding() {
                        self.unparsed = !self.rbuf.is_empty();
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.push_ready(resp::error(&e.to_string()));
                    self.closing = true;
                }
            }
        }
    }

    /// Routes and dispatches one request, or holds it when the CLIENT PAUSE in force (the
    /// batch's pause word) says so.
    fn request(&mut self, req: &mut scratch::Request, wire: Bytes) {
        let router::Routed { route, spec } =
            router::analyse_request(&req.args, Some(&wire), &mut req.keys);
        // Redis sends subscription confirmations as pushes (even in RESP2), which CLIENT
        // REPLY OFF / SKIP do not silence.
        let pushed = matches!(route, Route::Sub(_));
        let mut route = match self.acl {
            true => self.authorize(route, spec, &req.args, &mut req.acl_keys),
            false => route,
        };
        if self.monitored {
            route = self.monitor_gate(route, spec);
        }
        if self.pause_word != 0 {
            if let Some(write) = self.pause_holds(self.pause_word, &route, spec) {
                // Rare: the held request takes the thread's argument vector with it.
                return self.hold(write, std::mem::take(&mut req.args), wire);
            }
        }
        if (self.tx.active() || matches!(route, Route::Tx(_))) && self.must_fence(&route) {
            // Rare: the held request takes the thread's argument vector with it.
            return self.fence(std::mem::take(&mut req.args), wire);
        }
        let args = &req.args;
        if self.tracking.is_some() {
            self.track_request(spec, args);
        }
        if self.tx.in_multi() && hold::may_write(spec, &route, false) {
            self.tx.note_write();
        }
        if self.reads.mode() != ReadFrom::Master {
            // A tracking client's reads stay on masters: a replica could hand it a value
            // older than an invalidation it already got, and it would cache that.
            let masters_only = self.tx.active() || self.tracking.is_some();
            self.read_now = self.reads.for_request(spec, masters_only);
        }
        self.read_only_now = spec.is_some_and(|s| s.has_flag(crate::route::command::FLAG_READONLY));
        let before = self.queue.len();
        let cmd = self.obs.command(args, spec);
        let silent = self.reply_mode.take_turn();
        if self.monitored {
            self.monitor_feed(&route, spec, args);
        }
        self.dispatch(route, wire.clone(), args);
        self.read_only_now = false;
        if self.acl {
            // AUTH, HELLO AUTH or RESET may have changed it; the next header is
            // read under the new state, as in Redis.
            self.parser.set_unauthenticated(self.client.user.is_none());
        }
        if self.queue.len() > before {
            if let Some(slot) = self.queue.back() {
                self.obs.begin(slot, cmd, wire);
            }
            if self.reply_mode.own_reply_silent(silent) && !pushed {
                for slot in self.queue.range(before..) {
                    slot.set_discard();
                }
            }
        } else {
            self.obs.no_reply(&self.worker);
        }
        req.args.clear();
    }

    fn dispatch(&mut self, route: Route, wire: Bytes, args: &[Bytes]) {
        if self.tx.active() || matches!(route, Route::Tx(_)) {
            return self.tx_dispatch(route, wire, args);
        }
        if self.subs.is_some() && !self.client.resp3 && self.subscribed() {
            return self.dispatch_subscribed(route, wire, args);
        }
        self.dispatch_plain(route, wire, args)
    }

    /// Routes a request outside transactions and RESP2 subscribed mode.
    fn dispatch_plain(&mut self, route: Route, wire: Bytes, args: &[Bytes]) {
        match route {
            Route::Slot(slot) => {
                if !self.read_only_now {
                    self.touch(slot);
                }
                let slot_rc = self.new_slot();
                self.queue.push_back(Rc::clone(&slot_rc));
                let dest = match self.read_now {
                    ReadFrom::Master => Dest::Slot(slot),
                    mode => Dest::Read(slot, mode),
                };
                self.worker
                    .send(self.call(wire, dest, Target::Whole(slot_rc)));
            }
            Route::Split(split) => {
                let slot_rc = self.new_slot();
                self.queue.push_back(Rc::clone(&slot_rc));
                let merge = Merge::new(split.kind, split.order, split.parts.len(), slot_rc);
                if self.client.resp3 {
                    merge.set_resp3();
                }
                for (i, part) in split.parts.into_iter().enumerate() {
                    if !self.read_only_now {
                        self.touch(part.slot);
                    }
                    let dest = match self.read_now {
                        ReadFrom::Master => Dest::Slot(part.slot),
                        mode => Dest::Read(part.slot, mode),
                    };
                    self.worker.send(Call::new(
                        part.wire,
                        dest,
                        Target::Part(Rc::clone(&merge), i),
                    ));
                }
            }
            Route::AnyNode => self.send_to_node(self.keyless_node(), wire),
            Route::Publish => {
                let addr = {
                    let map = self.worker.shared.topology.map.load();
                    map.pubsub_node(None).map(|n| Arc::clone(&n.addr))
                };
                self.send_to_node(addr, wire)
            }
            Route::FanOut(f) => self.fan_out(f, wire, args),
            Route::Blocking(slot) => self.blocking(blocking::Start::Slot(slot), wire),
            Route::Wait => self.wait(args),
            Route::Tx(_) => self.tx_dispatch(route, wire, args),
            Route::Sub(sub) => {
                self.sub_dispatch(sub, wire, args);
                self.sync_registry();
            }
            Route::Local(Local::ClientReply) => {
                if self.reply_mode.set(&args[2]) {
                    self.push_ready(resp::simple("OK"));
                } else {
                    self.push_ready(resp::error("ERR syntax error"));
                }
            }
            Route::Local(Local::Reset) => {
                self.tx_reset();
                self.sub_reset();
                self.reset_login();
                self.monitor_stop();
                self.client.name = None;
                self.client.resp3 = false;
                self.reply_mode = ReplyMode::default();
                self.tracking_off();
                self.read_write();
                self.sync_read_user();
                self.sync_registry();
                self.push_ready(resp::simple("RESET"));
            }
            Route::Local(Local::Proxy) => {
                let slot_rc = self.new_slot();
                self.queue.push_back(Rc::clone(&slot_rc));
                let shared = Arc::clone(&self.worker.shared);
                let args = args[1..].to_vec();
                tokio::task::spawn_local(async move {
                    slot_rc.fill(admin::answer(args, shared).await);
                });
            }
            Route::Local(Local::ClientUnblock) => self.client_unblock(args),
            Route::Local(Local::ClientTracking) => self.tracking_command(args),
            Route::Local(Local::ConfigGet) => self.config_get(wire),
            Route::Local(Local::Monitor) => self.monitor_start(),
            Route::Local(Local::ReadOnly) => self.read_only(),
            Route::Local(Local::ReadWrite) => {
                self.read_write();
                self.push_ready(resp::simple("OK"));
            }
            Route::Local(Local::Info) => {
                let slot_rc = self.new_slot();
                self.queue.push_back(Rc::clone(&slot_rc));
                let worker = Rc::clone(&self.worker);
                let args = args[1..].to_vec();
                let hide_keyspace = self.client.user.as_ref().is_some_and(|u| u.namespaced());
                tokio::task::spawn_local(async move {
                    slot_rc.fill(crate::metrics::info::answer(args, worker, hide_keyspace).await);
                });
            }
            Route::Local(cmd) => {
                let r = local::answer(cmd, args, &mut self.client, &self.worker.shared);
                self.push_ready(r.reply);
                if r.close {
                    self.closing = true;
                }
                if matches!(cmd, Local::ClientSetName | Local::Hello | Local::Auth) {
                    self.sync_registry();
                }
                if self.acl && matches!(cmd, Local::Hello | Local::Auth) {
                    self.sync_read_user();
                }
                if cmd == Local::ClientPause {
                    // The client's own next requests are held too, even in this batch.
                    self.pause_word = self.worker.shared.registries.pause.word();
                }
            }
            Route::Reply(reply) => self.push_ready(reply),
            Route::CrossSlot => self.cross_slot(args),
            Route::SortPatterns(_) if !self.tx.active() && self.cross_slot_emulates() => {
                self.cross_slot(args)
            }
            Route::SortPatterns(slot) => self.dispatch_plain(Route::Slot(slot), wire, args),
        }
    }

    /// Copies what CLIENT LIST shows (name, protocol, subscriptions, MULTI) to the registry;
    /// called after the rare commands that change them.
    fn sync_registry(&self) {
        let l = &self.live;
        l.resp.store(if self.client.resp3 { 3 } else { 2 }, Relaxed);
        l.multi.store(self.tx.in_multi(), Relaxed);
        let (sub, psub, ssub) = self.subs.as_ref().map_or((0, 0, 0), |s| s.counts());
        l.sub.store(sub as u64, Relaxed);
        l.psub.store(psub as u64, Relaxed);
        l.ssub.store(ssub as u64, Relaxed);
        let clients = &self.worker.shared.registries.clients;
        clients.set_name(self.client.id, self.client.name.as_ref());
        if self.acl {
            let user = self.client.user.as_ref().map_or("default", |u| &u.name);
            clients.set_user(self.client.id, user);
        }
    }

    /// A call for the client's own protocol: RESP3 clients' requests travel on RESP3
    /// connections, so the node's reply passes through unchanged. (Split and fan-out parts
    /// stay on RESP2, which the merges read; see [`Merge::set_resp3`].)
    fn call(&self, wire: Bytes, dest: Dest, target: Target) -> Call {
        let mut c = Call::new(wire, dest, target);
        c.resp3 = self.client.resp3;
        c
    }

    /// How many dedicated connections this client may hold now (`max_dedicated_per_client`,
    /// live).
    fn dedicated_cap(&self) -> usize {
        self.worker
            .shared
            .settings
            .live
            .get()
            .max_dedicated_per_client
    }
}
