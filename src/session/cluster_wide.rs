//! Cluster-wide commands (KEYS, DBSIZE, FLUSHALL, CONFIG SET, SCRIPT KILL, ACL SETUSER,
//! LATENCY, ...): one call per node the current map names, merged into the client's one
//! reply (SCAN runs its steps in [`super::scan`]); and keyless commands whose answer is the
//! same everywhere (COMMAND, TIME, ...), sent to any one master, and PUBLISH, sent to the
//! pub/sub node.

use super::Session;
use crate::backend::worker::CLUSTERDOWN_UNSERVED;
use crate::route::dispatch::{Call, Dest, Merge, Target};
use crate::route::fanout;
use crate::route::merge::MergeKind;
use crate::route::resp;
use crate::route::router::FanOut;
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;

impl Session {
    /// The master a keyless request goes to: one of the masters not marked failing (all of
    /// them if every one is), chosen by client, so a client's keyless requests stay on one.
    pub(super) fn keyless_node(&self) -> Option<Arc<str>> {
        let map = self.worker.shared.topology.map.load();
        let live: Vec<_> = map.nodes.iter().filter(|n| !n.failing).collect();
        let pool = if live.is_empty() {
            map.nodes.iter().collect()
        } else {
            live
        };
        (!pool.is_empty()).then(|| Arc::clone(&pool[self.client.id as usize % pool.len()].addr))
    }

    /// Sends a request whole to `addr` (`None`: no node serves, the client gets CLUSTERDOWN),
    /// in the client's protocol.
    pub(super) fn send_to_node(&mut self, addr: Option<Arc<str>>, wire: Bytes) {
        match addr {
            Some(addr) => {
                let slot_rc = self.new_slot();
                self.queue.push_back(Rc::clone(&slot_rc));
                self.worker
                    .send(self.call(wire, Dest::Node(addr), Target::Whole(slot_rc)));
            }
            None => self.push_ready(resp::error(CLUSTERDOWN_UNSERVED)),
        }
    }

    /// Sends a cluster-wide command to the nodes the current map names and merges the replies
    /// into one reply slot. Every call is addressed to a node (`Dest::Node`), so a MOVED is
    /// not expected; an unreachable node fails only its part, and the merge reports it.
    pub(super) fn fan_out(&mut self, f: FanOut, wire: Bytes, args: &[Bytes]) {
        if args.len() >= 2 && args[0].eq_ignore_ascii_case(b"script") {
            if args.len() == 3 && args[1].eq_ignore_ascii_case(b"load") {
                self.worker.shared.registries.scripts.remember(&args[2]);
            } else if args[1].eq_ignore_ascii_case(b"flush") {
                self.worker.shared.registries.scripts.clear();
            }
        }
        let map = self.worker.shared.topology.map.load();
        // Proxy settings a CONFIG SET changes too, applied once every node accepted it.
        let mut owned = None;
        let (nodes, kind, wire) = match f {
            FanOut::Masters(kind) => {
                let mut nodes = fanout::masters(&map);
                if kind == MergeKind::FirstNonNil && !nodes.is_empty() {
                    // RANDOMKEY: start at a different master each time, so every master's keys
                    // get their turn (the first non-nil reply in send order wins).
                    let turn = self.client.id as usize + self.fan_turns;
                    self.fan_turns = self.fan_turns.wrapping_add(1);
                    let len = nodes.len();
                    nodes.rotate_left(turn % len);
                }
                (nodes, kind, wire)
            }
            FanOut::AllNodes { kind, config } => {
                match self.node_config(config, args) {
                    Ok(pairs) => owned = pairs,
                    Err(refused) => return self.push_ready(refused),
                }
                // The switch that lets CONFIG SET through to settings that could cut the proxy
                // off covers the ACL changes that could too.
                if args[0].eq_ignore_ascii_case(b"acl")
                    && !self
                        .worker
                        .shared
                        .settings
                        .live
                        .get()
                        .allow_dangerous_config_set
                {
                    let user = &self.worker.shared.settings.config.backend_user;
                    if let Some(why) = crate::access::acl_guard::lockout(args, user) {
                        return self.push_ready(resp::error(&why));
                    }
                }
                (fanout::all_nodes(&map), kind, wire)
            }
            FanOut::Scan(cursor) => return self.scan(cursor, args),
        };
        if nodes.is_empty() {
            return self.push_ready(resp::error(CLUSTERDOWN_UNSERVED));
        }
        let mut slot_rc = self.new_slot();
        self.queue.push_back(Rc::clone(&slot_rc));
        if let Some(pairs) = owned {
            slot_rc = self.apply_after_nodes(slot_rc, pairs);
        }
        let merge = Merge::fan_out(kind, nodes.clone(), slot_rc);
        if self.client.resp3 {
            merge.set_resp3();
        }
        // SCRIPT KILL / FUNCTION KILL exist for a node busy with a script: on the shared
        // connection they would wait behind that very script, so each goes on its own.
        let alone = kind == MergeKind::AnyOk;
        for (i, node) in nodes.into_iter().enumerate() {
            let call = Call::new(
                wire.clone(),
                Dest::Node(node),
                Target::Part(Rc::clone(&merge), i),
            );
            if alone {
                self.worker.send_alone(call);
            } else {
                self.worker.send(call);
            }
        }
    }
}
