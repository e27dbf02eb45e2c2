//! The proxy's part in CONFIG SET, CONFIG GET and CONFIG RESETSTAT, which otherwise concern
//! the nodes: the settings it refuses to change on every node, the slow log's settings it
//! applies to itself, the values it shows for them, and the INFO counters it resets.
//!
//! Invariants: a refused CONFIG SET reaches no node; the proxy takes a slow log setting only
//! once every node accepted the whole CONFIG SET (so a value a node refuses changes nothing
//! anywhere but the nodes that took it, as the reply says); the work here runs only for these
//! commands, never on the data path.

use super::Session;
use crate::local_notify::LocalNotify;
use crate::route::dispatch::{Call, Dest, ReplySlot, Target};
use crate::route::router::NodeConfig;
use crate::route::{config_refusal, own_settings, resp};
use crate::shared::Shared;
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Proxy settings a CONFIG SET changes once the nodes accepted it: (setting, value) pairs.
pub(super) type OwnedPairs = Vec<(&'static str, String)>;

impl Session {
    /// Why the proxy refuses this CONFIG SET (`args` is the whole request), if it does:
    /// `allow_config_set = false`, or a setting that would cut the proxy or the cluster off
    /// (unless `allow_dangerous_config_set`).
    pub(super) fn config_set_refusal(&self, args: &[Bytes]) -> Option<Bytes> {
        let cfg = self.worker.shared.settings.live.get();
        if !cfg.allow_config_set {
            return Some(resp::error(
                "ERR slotproxy: CONFIG SET is disabled by the proxy's allow_config_set setting",
            ));
        }
        if cfg.allow_dangerous_config_set {
            return None;
        }
        config_refusal::first_refusal(args).map(|e| resp::error(&e))
    }

    /// Before CONFIG SET / RESETSTAT go to every node: the refusal the client gets instead,
    /// or the proxy settings to apply once the nodes accepted (RESETSTAT resets the proxy's
    /// INFO counters here).
    pub(super) fn node_config(
        &self,
        config: Option<NodeConfig>,
        args: &[Bytes],
    ) -> Result<Option<OwnedPairs>, Bytes> {
        match config {
            None => Ok(None),
            Some(NodeConfig::ResetStat) => {
                crate::metrics::info::reset_stats(&self.worker.shared);
                Ok(None)
            }
            Some(NodeConfig::Set) => {
                if let Some(refused) = self.config_set_refusal(args) {
                    return Err(refused);
                }
                match own_settings::proxy_pairs(args) {
                    Err(e) => Err(resp::error(&e)),
                    Ok(pairs) if pairs.is_empty() => Ok(None),
                    Ok(pairs) => Ok(Some(pairs)),
                }
            }
        }
    }

    /// The slot the nodes' merged CONFIG SET reply goes to when it changes proxy settings:
    /// once it is `+OK`, `pairs` are applied to the proxy (every worker sees them at once),
    /// then the reply goes on to `client`.
    pub(super) fn apply_after_nodes(
        &self,
        client: Rc<ReplySlot>,
        pairs: OwnedPairs,
    ) -> Rc<ReplySlot> {
        let signal = Rc::new(LocalNotify::new());
        let nodes = ReplySlot::new(&signal);
        let waiting = Rc::clone(&nodes);
        let shared = Arc::clone(&self.worker.shared);
        tokio::task::spawn_local(async move {
            let reply = match wait_for(&waiting, &signal, &shared).await {
                Some(r) if &r[..] == b"+OK\r\n" => apply(&shared, &pairs),
                Some(r) => r,
                None => resp::error(
                    "ERR slotproxy: the nodes did not answer CONFIG SET in time; it may or may not have been applied",
                ),
            };
            client.fill(reply);
        });
        nodes
    }

    /// CONFIG GET: asked of one node over the shared connections, its reply shown with the
    /// proxy's values for the settings it owns.
    pub(super) fn config_get(&mut self, wire: Bytes) {
        let Some(addr) = self.keyless_node() else {
            return self.push_ready(resp::error(crate::backend::worker::CLUSTERDOWN_UNSERVED));
        };
        let client = self.new_slot();
        self.queue.push_back(Rc::clone(&client));
        let signal = Rc::new(LocalNotify::new());
        let node = ReplySlot::new(&signal);
        // RESP2 whatever the client speaks: the reply is rebuilt for it below.
        self.worker.send(Call::new(
            wire,
            Dest::Node(addr),
            Target::Whole(Rc::clone(&node)),
        ));
        let shared = Arc::clone(&self.worker.shared);
        let resp3 = self.client.resp3;
        tokio::task::spawn_local(async move {
            let reply = match wait_for(&node, &signal, &shared).await {
                Some(r) => own_settings::overlay(&r, &shared.settings.live.get(), resp3),
                None => resp::error("ERR slotproxy: no reply from the node to CONFIG GET in time"),
            };
            client.fill(reply);
        });
    }
}

/// Applies the slow log settings a CONFIG SET the nodes accepted names; `+OK`, or the error
/// saying the nodes took it and the proxy did not.
fn apply(shared: &Shared, pairs: &OwnedPairs) -> Bytes {
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let live = &shared.settings.live;
    match live.set_all(&pairs) {
        Ok(()) => {
            shared.metrics.slowlog.trim(live.slowlog_max_len());
            resp::simple("OK")
        }
        Err(e) => resp::error(&format!(
            "ERR slotproxy: the nodes took the setting but the proxy did not: {}",
            format!("{e:#}").replace(['\r', '\n'], " ")
        )),
    }
}

/// The reply `slot` receives, or `None` past the deadline. Every call is answered or failed by
/// its worker within `request_timeout` (the connect may come first); the deadline is a safety
/// net. A fill while this task is not waiting leaves a permit, so no wake-up is lost.
async fn wait_for(slot: &ReplySlot, signal: &LocalNotify, shared: &Shared) -> Option<Bytes> {
    let live = &shared.settings.live;
    let deadline = tokio::time::Instant::now()
        + live.request_timeout()
        + live.connect_timeout()
        + Duration::from_secs(1);
    loop {
        if let Some(r) = slot.take() {
            return Some(r);
        }
        if tokio::time::timeout_at(deadline, signal.notified())
            .await
            .is_err()
        {
            return None;
        }
    }
}
