//! What a client session records about itself: per-command counts and latencies, traffic,
//! the slow log, live limits, and its part in a graceful shutdown.
//!
//! Kept apart from [`crate::session`] so the data path's code stays about moving requests.
//! Invariants: everything here is updated by the session's own worker thread only (single-writer
//! counters from [`crate::metrics::stats`]); the clock is read once per socket read and once per batch of
//! replies, not per request; the slow log's lock is taken only for a request that was slow.

use crate::backend::worker::Worker;
use crate::clock::now_us;
use crate::config::Config;
use crate::metrics::slowlog::Slow;
use crate::metrics::stats::{bump, drop_by};
use crate::net::stream::Stream;
use crate::route::dispatch::ReplySlot;
use crate::session::local::ClientState;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use std::sync::Arc;

/// The error a request gets when shutdown's deadline passes before its reply arrived.
pub const SHUTDOWN_UNANSWERED: &str =
    "ERR slotproxy: shutting down and the backend did not reply in time; the command may or may not have run";

/// Per-session observation state.
pub struct SessionObs {
    generation: u64,
    /// When the last socket read happened: the arrival time of the requests it brought
    /// ([`now_us`] stamps, like every time here).
    read_at: u64,
    /// The clock read for the current batch of replies (cleared every loop turn).
    now: Option<u64>,
    metrics_on: bool,
    /// The proxy's shutdown state, read once per loop turn (one atomic load).
    shutdown: Shutdown,
}

impl SessionObs {
    /// State for a new session on `worker`.
    pub fn new(worker: &Worker) -> SessionObs {
        SessionObs {
            generation: worker.shared.settings.live.generation(),
            read_at: now_us(),
            now: None,
            metrics_on: worker.shared.metrics.metrics_on,
            shutdown: worker.shared.shutdown.clone(),
        }
    }

    /// Called at the top of every session loop turn: returns the new settings when they
    /// changed since the session last looked (one relaxed load otherwise).
    pub fn reload(&mut self, worker: &Worker) -> Option<Arc<Config>> {
        self.now = None;
        let g = worker.shared.settings.live.generation();
        if g == self.generation {
            return None;
        }
        self.generation = g;
        Some(worker.shared.settings.live.get())
    }

    /// Whether the proxy is shutting down: the session reads no more requests.
    pub fn draining(&self) -> bool {
        self.shutdown.is_stopping()
    }

    /// Whether shutdown's deadline passed: unanswered requests get an error now.
    pub fn aborted(&self) -> bool {
        self.shutdown.is_aborting()
    }

    /// `n` bytes were read from the client; returns when (the arrival of the requests in
    /// them), a [`now_us`] stamp.
    pub fn read(&mut self, worker: &Worker, n: usize) -> u64 {
        bump(&worker.stats().m.bytes_in, n as u64);
        self.read_at = now_us();
        self.read_at
    }

    /// `n` reply bytes were written to the client.
    pub fn wrote(&self, worker: &Worker, n: usize) {
        let m = &worker.stats().m;
        bump(&m.bytes_out, n as u64);
        drop_by(&m.pending_out, n as u64);
    }

    /// The command label of a request whose spec the router found (only computed when
    /// metrics are on).
    pub fn command(
        &self,
        args: &[Bytes],
        spec: Option<&'static crate::route::command::CommandSpec>,
    ) -> u16 {
        if self.metrics_on {
            crate::metrics::stats::command_index_of(args, spec)
        } else {
            0
        }
    }

    /// Stamps a request's reply slot with its arrival, label and bytes.
    pub fn begin(&self, slot: &ReplySlot, cmd: u16, wire: Bytes) {
        slot.begin(self.read_at, cmd, wire);
    }

    /// A request's reply is ready for the client: count it, time it, and log it if slow.
    pub fn done(&mut self, worker: &Worker, slot: &ReplySlot, reply: &Bytes, client: &ClientState) {
        let meta = slot.take_meta();
        let m = &worker.stats().m;
        bump(&m.pending_out, reply.len() as u64);
        let Some(started) = meta.started else {
            return;
        };
        // Only the slot a request was stamped on counts: one per request, never a protocol
        // error's or a pub/sub message's.
        bump(&m.completed, 1);
        let now = *self.now.get_or_insert_with(now_us);
        let us = now.saturating_sub(started);
        if self.metrics_on {
            if let Some(c) = m.commands.get(meta.cmd as usize) {
                bump(&c.calls, 1);
                if reply.first() == Some(&b'-') {
                    bump(&c.errors, 1);
                }
                c.total.record(us);
                if meta.node != u32::MAX {
                    c.backend.record(u64::from(meta.backend_us));
                }
            }
        }
        let live = &worker.shared.settings.live;
        if us >= live.slowlog_threshold_us() && live.slowlog_max_len() > 0 {
            let node = if meta.node == u32::MAX {
                String::new()
            } else {
                worker
                    .shared
                    .registries
                    .nodes
                    .name(meta.node)
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            };
            worker.shared.metrics.slowlog.push(
                Slow {
                    wire: &meta.wire,
                    duration_us: us,
                    backend_us: u64::from(meta.backend_us),
                    node,
                    part: meta.part,
                    // The address noted at accept: asking the socket cost a system call per
                    // slow request, many of them when an overloaded proxy logs every request.
                    client_addr: client.peer.map(|a| a.to_string()).unwrap_or_default(),
                    client_name: client.name.clone().unwrap_or_default(),
                },
                live.slowlog_max_len(),
            );
        }
    }

    /// A request's reply slot is dropped without its reply reaching the client (CLIENT REPLY
    /// OFF / SKIP, or the session ended first): the request is no longer in flight.
    pub fn dropped(&self, worker: &Worker, slot: &ReplySlot) {
        if slot.take_meta().started.is_some() {
            bump(&worker.stats().m.completed, 1);
        }
    }

    /// A request was handled without a reply slot of its own: it is not in flight.
    pub fn no_reply(&self, worker: &Worker) {
        bump(&worker.stats().m.completed, 1);
    }

    /// The client is being disconnected for not reading its replies: past
    /// `max_pending_reply_bytes`, or, for a subscriber, past `max_pubsub_reply_bytes` (`limit`
    /// names the setting in the log line).
    pub fn cut(
        &self,
        worker: &Worker,
        stream: &Stream,
        id: u64,
        pending: usize,
        limit: &'static str,
    ) {
        bump(&worker.stats().m.cut_output, 1);
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::warn!(
            client = id,
            %peer,
            pending,
            "client disconnected: unread replies exceed {limit}"
        );
    }

    /// The session ends with `pending` reply bytes never written.
    pub fn end(&self, worker: &Worker, pending: usize) {
        drop_by(&worker.stats().m.pending_out, pending as u64);
    }
}

/// How long a closing session keeps reading (and discarding) what the client still sends.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes a client connection without losing replies already written: sends FIN after them,
/// then reads and discards what the client still sends until it closes too, for at most
/// [`LINGER`]. Closing a socket that has unread input makes the kernel send a reset, which
/// drops replies the client has not received yet; the requests discarded here were never
/// parsed, so never executed.
pub async fn linger(stream: &mut Stream) {
    // TLS sends close_notify first, which waits for the socket: bounded like the rest.
    if !matches!(
        tokio::time::timeout(LINGER, stream.shutdown()).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let deadline = tokio::time::sleep(LINGER);
    tokio::pin!(deadline);
    let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            r = stream.readable() => {
                if r.is_err() {
                    return;
                }
                buf.clear();
                match stream.try_read_buf(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    }
}
