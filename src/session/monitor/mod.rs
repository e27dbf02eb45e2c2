//! MONITOR answered by the proxy: a monitoring client sees every request the proxy's clients
//! send, on every worker, one line each in Redis's format ([`line`]), delivered through the
//! proxy-wide [`registry`].
//!
//! As on a Redis 7.0 node: MONITOR needs the admin level (its `admin` flag); a second MONITOR
//! on the same connection is ignored without a reply; a monitoring connection refuses
//! commands that read or write keys (`ERR Replica can't interact with the keyspace`) and
//! runs the others (PING, QUIT, RESET, which stops monitoring, ...); CLIENT REPLY OFF
//! silences the lines too. A monitor that does not read is disconnected past
//! `max_pubsub_reply_bytes`, alone.
//!
//! Invariants: while nobody monitors, a session pays one relaxed load per batch of requests
//! (`Session::monitored`); while someone does, each shown request is formatted once, at the
//! moment the proxy takes it (a held request: when it is let go), and the same bytes go to
//! every monitor, so one client's requests reach each monitor in the order it sent them.

pub mod line;
pub mod registry;

use super::Session;
use crate::metrics::stats::bump;
use crate::route::command::{CommandSpec, FLAG_READONLY};
use crate::route::resp;
use crate::route::router::Route;
use crate::session::clients::MONITOR;
use bytes::Bytes;
use registry::{Seat, Taken};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Redis's answer to a command that reads or writes keys, sent on a MONITOR connection.
pub const KEYSPACE_REFUSED: &str = "ERR Replica can't interact with the keyspace";

/// A client's MONITOR state, made the first time it needs one (it monitors, or monitors see
/// its requests), so other clients carry one pointer for it.
pub(super) struct Side {
    /// Its place among the monitors, while it is one.
    seat: Option<Seat>,
    /// Its address as monitors show it.
    addr: String,
}

impl Session {
    /// Whether this client is a monitor.
    pub(super) fn is_monitor(&self) -> bool {
        self.monitor.as_ref().is_some_and(|m| m.seat.is_some())
    }

    fn monitor_side(&mut self) -> &mut Side {
        let stream = &self.stream;
        self.monitor.get_or_insert_with(|| {
            Box::new(Side {
                seat: None,
                addr: stream
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            })
        })
    }

    /// MONITOR: the client becomes a monitor and gets `+OK`; a second MONITOR is ignored
    /// without a reply, as Redis does.
    pub(super) fn monitor_start(&mut self) {
        if self.is_monitor() {
            return;
        }
        let limit = self.worker.shared.settings.config.max_pubsub_reply_bytes;
        let seat = self
            .worker
            .shared
            .registries
            .monitors
            .join(Arc::clone(&self.live), limit);
        self.monitor_side().seat = Some(seat);
        self.live.monitor.store(true, Ordering::Relaxed);
        // The rest of this batch is checked and shown too.
        self.monitored = true;
        self.push_ready(resp::simple("OK"));
    }

    /// RESET's part: the client stops monitoring (lines not delivered yet are dropped).
    pub(super) fn monitor_stop(&mut self) {
        if let Some(m) = self.monitor.as_mut() {
            m.seat = None;
        }
        self.live.monitor.store(false, Ordering::Relaxed);
    }

    /// On a monitor, a command that reads or writes keys (or may replicate: EVAL, PUBLISH,
    /// PFCOUNT, ...) gets Redis's refusal in place of its route. Called only while monitors
    /// exist.
    pub(super) fn monitor_gate(&self, route: Route, spec: Option<&CommandSpec>) -> Route {
        if matches!(route, Route::CrossSlot) && !self.cross_slot_emulates() {
            // Refused before it runs, so not shown to monitors either.
            return Route::Reply(resp::error(crate::route::router::CROSSSLOT));
        }
        if !self.is_monitor() || matches!(route, Route::Reply(_)) {
            return route;
        }
        let reads = spec.is_some_and(|s| s.flags & FLAG_READONLY != 0);
        if reads || super::hold::may_write(spec, &route, self.tx.writes()) {
            return Route::Reply(resp::error(KEYSPACE_REFUSED));
        }
        route
    }

    /// Shows a request about to be dispatched to every monitor, unless Redis would not
    /// ([`line::shown`]). Called only while monitors exist.
    pub(super) fn monitor_feed(
        &mut self,
        route: &Route,
        spec: Option<&CommandSpec>,
        args: &[Bytes],
    ) {
        if !line::shown(route, spec) {
            return;
        }
        let secrets = line::secrets(args, spec);
        let now = std::time::SystemTime::now();
        let text = line::format(now, &self.monitor_side().addr, args, &secrets);
        self.worker.shared.registries.monitors.publish(&text);
    }

    /// Handles the [`MONITOR`] attention bit: moves the lines that arrived to the output.
    /// Returns false when the client must be disconnected: its queue passed
    /// `max_pubsub_reply_bytes` because it did not read.
    pub(super) fn monitor_attention(&mut self, bits: u8) -> bool {
        if bits & MONITOR == 0 {
            return true;
        }
        // Cleared before taking: a line published meanwhile sets it again and wakes us.
        self.live.attention.fetch_and(!MONITOR, Ordering::Acquire);
        let Some(seat) = self.monitor.as_ref().and_then(|m| m.seat.as_ref()) else {
            return true;
        };
        if self.closing {
            return true;
        }
        let before = self.out.len();
        match seat.take(&mut self.out) {
            Taken::Overflow => {
                let limit = self.worker.shared.settings.config.max_pubsub_reply_bytes;
                self.obs.cut(
                    &self.worker,
                    &self.stream,
                    self.client.id,
                    self.out_bytes + limit,
                    "max_pubsub_reply_bytes",
                );
                false
            }
            Taken::Lines(_) if self.reply_mode.off() => {
                self.out.truncate(before);
                true
            }
            Taken::Lines(n) => {
                self.out_bytes += n;
                bump(&self.worker.stats().m.pending_out, n as u64);
                true
            }
        }
    }
}
