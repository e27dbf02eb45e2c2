//! A client's cluster-wide SCAN call: a task of the session that runs the steps of the cluster
//! cursor ([`crate::route::fanout`]) one after another, over the worker's shared connections,
//! until the batch is done ([`crate::route::scan_batch`] decides); its reply keeps its place
//! in the client's queue.

use super::Session;
use crate::backend::worker::{Worker, CLUSTERDOWN_UNSERVED};
use crate::route::dispatch::{Dest, ReplySlot};
use crate::route::fanout::{self, ScanCursor, ScanPlan, ScanStep};
use crate::route::resp;
use crate::route::scan_batch::{self, Batch};
use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;

impl Session {
    /// SCAN from the client's (decoded) `cursor`: starts the task that answers it.
    pub(super) fn scan(&mut self, cursor: ScanCursor, args: &[Bytes]) {
        let slot = self.new_slot();
        self.queue.push_back(Rc::clone(&slot));
        let worker = Rc::clone(&self.worker);
        let args = args.to_vec();
        let task = tokio::task::spawn_local(async move {
            let reply = run(&worker, args, cursor, &slot).await;
            slot.fill(reply);
        });
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(task.abort_handle());
    }
}

/// Runs the steps of one call; its reply. `client` is the client's cursor as sent.
async fn run(worker: &Worker, mut args: Vec<Bytes>, client: ScanCursor, slot: &ReplySlot) -> Bytes {
    let mut batch = Batch::new(scan_batch::requested_count(&args));
    let mut cursor = client;
    // The cluster cursor as the client would get it now (what a failed step falls back to).
    let mut handed = client.encode().unwrap_or(0);
    // The plan is only worked out again when the map changed.
    let mut plan = ScanPlan {
        order: Vec::new(),
        fingerprint: 0,
    };
    let mut plan_version = None;
    loop {
        let map = worker.shared.topology.map.load();
        if plan_version != Some(map.version) {
            plan = fanout::scan_plan(&map);
            plan_version = Some(map.version);
        }
        drop(map);
        if plan.order.is_empty() {
            return batch.fail(resp::error(CLUSTERDOWN_UNSERVED), handed);
        }
        if plan.order.len() > fanout::MAX_SCAN_MASTERS {
            return batch.fail(
                resp::error(&format!(
                    "ERR slotproxy: SCAN supports at most {} masters",
                    fanout::MAX_SCAN_MASTERS
                )),
                handed,
            );
        }
        let at = cursor.resume(&plan);
        if batch.steps() > 0 && at != cursor {
            // The assignment changed under this call: the next call starts over on it.
            return batch.reply(handed);
        }
        let masters = plan.order.len() as u32;
        let next = match at.step(masters) {
            ScanStep::Visit(i) => {
                args[1] = Bytes::from(at.node_cursor.to_string());
                let wire = resp::encode_command(&args).freeze();
                let frames = ask(worker, &plan.order[i..=i], &wire, slot).await;
                let frame = frames.into_iter().next().unwrap_or_default();
                match scan_batch::read_node_reply(&frame) {
                    Err(e) => return batch.fail(e, handed),
                    Ok((node_cursor, keys)) => match at.next(node_cursor, masters) {
                        Some(next) => {
                            batch.add(keys);
                            next
                        }
                        None => {
                            let e = resp::error(&format!(
                                "ERR slotproxy: a node's SCAN cursor {node_cursor} is too large to carry"
                            ));
                            return batch.fail(e, handed);
                        }
                    },
                }
            }
            ScanStep::Check { .. } => {
                let wire = Bytes::from_static(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nNODES\r\n");
                let frames = ask(worker, &plan.order, &wire, slot).await;
                let mut texts = Vec::with_capacity(frames.len());
                for f in &frames {
                    match resp::Value::decode(f) {
                        Ok(resp::Value::Bulk(Some(t))) => {
                            texts.push(String::from_utf8_lossy(&t).into_owned())
                        }
                        _ if resp::is_error(f) => return batch.fail(f.clone(), handed),
                        _ => {
                            let e = resp::error("ERR slotproxy: unexpected CLUSTER NODES reply");
                            return batch.fail(e, handed);
                        }
                    }
                }
                let report = fanout::check_report(&plan.order, &texts);
                batch.add(Vec::new());
                at.after_check(masters, &report)
            }
        };
        handed = next;
        if !batch.goes_on(next) {
            return batch.reply(next);
        }
        cursor = ScanCursor::decode(next);
    }
}

/// Sends `wire` to each of `nodes` on the worker's shared connections and waits for every
/// reply (in `nodes` order); the time spent is recorded on the client's `slot`.
async fn ask(worker: &Worker, nodes: &[Arc<str>], wire: &Bytes, slot: &ReplySlot) -> Vec<Bytes> {
    let calls = nodes.iter().map(|node| super::gather::Ask {
        wire: wire.clone(),
        dest: Dest::Node(Arc::clone(node)),
        resp3: false,
    });
    super::gather::gather(worker, calls, slot).await
}
