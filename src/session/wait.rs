//! WAIT numreplicas timeout, for the nodes this client sent keyed commands to (any but those
//! flagged read-only, which move no replication offset).
//!
//! A node answers WAIT for the replication offset of the connection it arrives on, and the
//! client's writes travelled on the worker's shared connections; so the proxy asks on those
//! same connections, after the writes (each connection is FIFO; a RESP3 client's writes took
//! the RESP3 connections, which are asked too). A real `WAIT n t` there would hold up every
//! other client on that connection for up to `t`, so the proxy polls instead with `WAIT n 1`
//! every 25 ms: it answers at once when satisfied, otherwise blocks the connection until the
//! node's next timeout check (up to 100 ms at Redis's default `hz` 10) and makes the node ask
//! its replicas for an acknowledgement right away. (`WAIT 0 0` would never block, but after a
//! blocked WAIT the node measures against an offset its replicas acknowledge only a second
//! later, so it under-counts.) A client's WAITs run one after the other, as on Redis, so one
//! client polls at most once per round however many WAITs it pipelines. The reply is the
//! smallest count over the nodes, once every node reached `numreplicas` or the client's
//! timeout passed (0 waits forever), as Redis answers. A waiting WAIT counts as blocked for
//! its client; CLIENT UNBLOCK ends it as Redis does: `TIMEOUT` answers the count of the
//! round in progress once it is in, `ERROR` Redis's UNBLOCKED error at once. Invariant: each waiting client has
//! at most one unsatisfied WAIT on a shared connection at a time.

use super::Session;
use crate::backend::worker::Worker;
use crate::route::dispatch::ReplySlot;
use crate::route::resp;
use crate::session::clients::UnblockMode;
use crate::session::unblock::{OpGuard, UNBLOCKED};
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(25);

/// Slots a client sent keyed commands other than read-only ones to, for WAIT. The first few are kept inline and only a
/// client that reaches more gets the 2 KB bit set, so a connection that sent a handful of
/// keyed commands stays small while it idles.
#[derive(Default)]
pub(super) enum Touched {
    /// None yet.
    #[default]
    None,
    /// Up to [`INLINE_SLOTS`] distinct slots (`len` of them used).
    Few { slots: [u16; INLINE_SLOTS], len: u8 },
    /// One bit per slot.
    Many(Box<[u64; 256]>),
}

const INLINE_SLOTS: usize = 8;

impl Touched {
    /// Adds `slot` (a no-op when it is there).
    pub(super) fn insert(&mut self, slot: u16) {
        match self {
            Touched::None => {
                let mut slots = [0; INLINE_SLOTS];
                slots[0] = slot;
                *self = Touched::Few { slots, len: 1 };
            }
            Touched::Few { slots, len } => {
                let used = &slots[..usize::from(*len)];
                if used.contains(&slot) {
                    return;
                }
                if usize::from(*len) < INLINE_SLOTS {
                    slots[usize::from(*len)] = slot;
                    *len += 1;
                    return;
                }
                let mut bits = Box::new([0u64; 256]);
                for &s in used.iter().chain(std::iter::once(&slot)) {
                    bits[usize::from(s >> 6)] |= 1 << (s & 63);
                }
                *self = Touched::Many(bits);
            }
            Touched::Many(bits) => bits[usize::from(slot >> 6)] |= 1 << (slot & 63),
        }
    }

    /// Calls `f` with every slot, each once.
    pub(super) fn for_each(&self, mut f: impl FnMut(u16)) {
        match self {
            Touched::None => {}
            Touched::Few { slots, len } => slots[..usize::from(*len)].iter().for_each(|&s| f(s)),
            Touched::Many(bits) => {
                for (w, word) in bits.iter().enumerate() {
                    let mut word = *word;
                    while word != 0 {
                        let b = word.trailing_zeros() as usize;
                        word &= word - 1;
                        f((w * 64 + b) as u16);
                    }
                }
            }
        }
    }
}

impl Session {
    /// Remembers that this client sent a keyed command that may write to `slot`'s owner (and whether on the
    /// RESP3 connections, which have replication offsets of their own).
    pub(super) fn touch(&mut self, slot: u16) {
        self.touched.insert(slot);
        self.touched_resp3 |= self.client.resp3;
    }

    /// WAIT: starts the polling task; its reply keeps its place in the queue.
    pub(super) fn wait(&mut self, args: &[Bytes]) {
        let num = crate::route::resp::parse_int(&args[1]);
        let timeout = crate::route::resp::parse_int(&args[2]);
        let (Some(num), Some(timeout)) = (num, timeout) else {
            return self.push_ready(resp::error("ERR value is not an integer or out of range"));
        };
        if timeout < 0 {
            return self.push_ready(resp::error("ERR timeout is negative"));
        }
        let map = self.worker.shared.topology.map.load();
        let mut nodes: Vec<Arc<str>> = Vec::new();
        self.touched.for_each(|slot| {
            if let Some(owner) = map.owner(slot) {
                if !nodes.contains(&owner.addr) {
                    nodes.push(Arc::clone(&owner.addr));
                }
            }
        });
        if nodes.is_empty() {
            // No write yet: the answer of one master, as from a single server.
            match crate::route::fanout::masters(&map).into_iter().next() {
                Some(m) => nodes.push(m),
                None => {
                    return self
                        .push_ready(resp::error(crate::backend::worker::CLUSTERDOWN_UNSERVED))
                }
            }
        }
        let slot = self.new_slot();
        self.queue.push_back(Rc::clone(&slot));
        let timeout = (timeout > 0).then(|| Duration::from_millis(timeout as u64));
        // One WAIT of a client polls at a time, as Redis runs a client's WAITs one after the
        // other: 1024 pipelined WAITs cost the shared connections what one does.
        let earlier = self.wait_last.take();
        let worker = Rc::clone(&self.worker);
        let resp3 = self.touched_resp3;
        let op = self.start_blocked_op();
        let task = tokio::task::spawn_local(async move {
            if let Some(earlier) = earlier {
                let _ = earlier.await;
            }
            poll(worker, nodes, num, timeout, resp3, slot, op).await
        });
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(task.abort_handle());
        self.wait_last = Some(task);
    }
}

/// Polls until `num` replicas acknowledged, `timeout` passed or CLIENT UNBLOCK ended the wait.
/// The client's writes went on the RESP2 connections, and also on the RESP3 ones if `resp3`:
/// each is asked.
async fn poll(
    worker: Rc<Worker>,
    nodes: Vec<Arc<str>>,
    num: i64,
    timeout: Option<Duration>,
    resp3: bool,
    reply: Rc<ReplySlot>,
    op: OpGuard,
) {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let wire = resp::encode_command(&[&b"WAIT"[..], num.to_string().as_bytes(), b"1"]).freeze();
    // The round's replies and an UNBLOCK handed over both wake the task on it.
    let signal = op.signal();
    let mut unblocked = false;
    loop {
        let mut slots = Vec::new();
        for node in &nodes {
            slots.push(worker.send_on_each_conn(node, &wire, signal, false));
            if resp3 {
                slots.push(worker.send_on_each_conn(node, &wire, signal, true));
            }
        }
        let mut frames: Vec<Vec<Option<Bytes>>> = slots
            .iter()
            .map(|per_node| vec![None; per_node.len()])
            .collect();
        loop {
            if let Some(r) = op.take_request() {
                let _ = r.done.send(Ok(true));
                match r.mode {
                    UnblockMode::Error => return reply.fill(resp::error(UNBLOCKED)),
                    UnblockMode::Timeout => unblocked = true,
                }
            }
            for (got, per_node) in frames.iter_mut().zip(&slots) {
                for (f, s) in got.iter_mut().zip(per_node) {
                    if f.is_none() {
                        *f = s.take();
                    }
                }
            }
            if frames.iter().flatten().all(Option::is_some) {
                break;
            }
            signal.notified().await;
        }
        let acked = frames
            .iter()
            .map(|per_node| {
                per_node
                    .iter()
                    .flatten()
                    .map(|frame| {
                        frame
                            .strip_prefix(b":")
                            .and_then(|b| resp::parse_int(b.strip_suffix(b"\r\n")?))
                            .unwrap_or(0)
                    })
                    .min()
                    .unwrap_or(i64::MAX)
            })
            .min()
            .unwrap_or(i64::MAX);
        let acked = if acked == i64::MAX { 0 } else { acked };
        let expired = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        if acked >= num || expired || unblocked {
            return reply.fill(resp::int(acked));
        }
        // An UNBLOCK ends the pause between rounds early.
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = signal.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Touched;

    fn collect(t: &Touched) -> Vec<u16> {
        let mut v = Vec::new();
        t.for_each(|s| v.push(s));
        v.sort_unstable();
        v
    }

    #[test]
    fn touched_slots_are_kept_once_inline_and_then_in_the_bit_set() {
        let mut t = Touched::default();
        assert!(collect(&t).is_empty());
        for s in [5, 16383, 5, 0, 7] {
            t.insert(s);
        }
        assert!(matches!(t, Touched::Few { .. }));
        assert_eq!(collect(&t), vec![0, 5, 7, 16383]);
        for s in 100..110 {
            t.insert(s);
        }
        assert!(matches!(t, Touched::Many(_)));
        let mut want = vec![0, 5, 7, 16383];
        want.extend(100..110);
        want.sort_unstable();
        assert_eq!(collect(&t), want);
    }
}
