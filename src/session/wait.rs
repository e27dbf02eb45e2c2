//! WAIT numreplicas timeout, for the nodes this client sent keyed commands to.
//!
//! A node answers WAIT for the replication offset of the connection it arrives on, and the
//! client's writes travelled on the worker's shared connections; so the proxy asks on those
//! same connections, after the writes (each connection is FIFO). A real `WAIT n t` there would
//! hold up every other client on that connection for up to `t`, so the proxy polls instead
//! with `WAIT n 1` every 25 ms: it answers at once when satisfied, otherwise blocks the
//! connection at most ~1 ms and makes the node ask its replicas for an acknowledgement right
//! away. (`WAIT 0 0` would never block, but after a blocked WAIT the node measures against an
//! offset its replicas acknowledge only a second later, so it under-counts.) The reply is the
//! smallest count over the nodes, once every node reached `numreplicas` or the client's
//! timeout passed (0 waits forever), as Redis answers. Invariant: an unsatisfied WAIT holds a
//! shared connection for at most about a millisecond per 25 ms.

use super::Session;
use crate::dispatch::ReplySlot;
use crate::resp;
use crate::worker::Worker;
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const POLL: Duration = Duration::from_millis(25);

impl Session {
    /// Remembers that this client sent a keyed command to `slot`'s owner.
    pub(super) fn touch(&mut self, slot: u16) {
        let bits = self.touched.get_or_insert_with(|| Box::new([0u64; 256]));
        bits[usize::from(slot >> 6)] |= 1 << (slot & 63);
    }

    /// WAIT: starts the polling task; its reply keeps its place in the queue.
    pub(super) fn wait(&mut self, args: &[Bytes]) {
        let num = crate::protocol::parse_int(&args[1]);
        let timeout = crate::protocol::parse_int(&args[2]);
        let (Some(num), Some(timeout)) = (num, timeout) else {
            return self.push_ready(resp::error("ERR value is not an integer or out of range"));
        };
        if timeout < 0 {
            return self.push_ready(resp::error("ERR timeout is negative"));
        }
        let map = self.worker.shared.map.load();
        let mut nodes: Vec<Arc<str>> = Vec::new();
        if let Some(bits) = &self.touched {
            for (w, word) in bits.iter().enumerate() {
                let mut word = *word;
                while word != 0 {
                    let b = word.trailing_zeros() as usize;
                    word &= word - 1;
                    let slot = (w * 64 + b) as u16;
                    if let Some(owner) = map.owner(slot) {
                        if !nodes.contains(&owner.addr) {
                            nodes.push(Arc::clone(&owner.addr));
                        }
                    }
                }
            }
        }
        if nodes.is_empty() {
            // No keyed command yet: the answer of one master, as from a single server.
            match crate::fanout::masters(&map).into_iter().next() {
                Some(m) => nodes.push(m),
                None => return self.push_ready(resp::error(crate::worker::CLUSTERDOWN_UNSERVED)),
            }
        }
        let slot = self.new_slot();
        self.queue.push_back(Rc::clone(&slot));
        let timeout = (timeout > 0).then(|| Duration::from_millis(timeout as u64));
        let task =
            tokio::task::spawn_local(poll(Rc::clone(&self.worker), nodes, num, timeout, slot));
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(task.abort_handle());
    }
}

async fn poll(
    worker: Rc<Worker>,
    nodes: Vec<Arc<str>>,
    num: i64,
    timeout: Option<Duration>,
    reply: Rc<ReplySlot>,
) {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let wire = resp::encode_command(&[&b"WAIT"[..], num.to_string().as_bytes(), b"1"]).freeze();
    loop {
        let signal = Rc::new(Notify::new());
        let mut slots = Vec::new();
        for node in &nodes {
            slots.push(worker.send_on_each_conn(node, &wire, &signal));
        }
        let mut acked = i64::MAX;
        for per_node in slots {
            let mut node_min = i64::MAX;
            for s in per_node {
                let frame = loop {
                    if let Some(f) = s.take() {
                        break f;
                    }
                    signal.notified().await;
                };
                let n = frame
                    .strip_prefix(b":")
                    .and_then(|b| crate::protocol::parse_int(b.strip_suffix(b"\r\n")?))
                    .unwrap_or(0);
                node_min = node_min.min(n);
            }
            acked = acked.min(node_min);
        }
        let acked = if acked == i64::MAX { 0 } else { acked };
        let expired = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        if acked >= num || expired {
            return reply.fill(resp::int(acked));
        }
        tokio::time::sleep(POLL).await;
    }
}
