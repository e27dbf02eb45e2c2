//! CREATE's way past Redis's rejoin delay: a master that was up and empty for more than 2 s
//! before it got its slots counted itself in a minority partition until then, and Redis keeps
//! it at `cluster_state:fail` for min(cluster-node-timeout, 5 s) after that
//! (`clusterUpdateState`, `mstime() - among_minority_time < rejoin_delay`, src/cluster.c line
//! 4513 at tag 7.0.15), even once it sees every slot. The delay is read from
//! `cluster-node-timeout` when the node checks, and that setting changes at run time. So when a
//! master sees every slot assigned but is still not ok, CREATE sets its cluster-node-timeout
//! to [`REJOIN_TIMEOUT_MS`] (Redis's smallest rejoin delay) and sets the operator's value back
//! as soon as the node reports ok.
//!
//! Invariants: only masters that own slots and already see the whole slot map are touched, so
//! the low value (which also makes that node quicker to suspect its peers) lasts only the few
//! hundred ms until it turns ok; the value read with `CONFIG GET` just before is the one
//! restored; nothing is lowered on a node whose `CONFIG GET` or `CONFIG SET` fails (renamed
//! or forbidden `CONFIG`: the create just waits out the delay); CREATE restores every lowered
//! node before it returns, on success and on error, and fails naming the node if it cannot.
//! `CONFIG REWRITE` is never sent, so a restarted node reads its own file either way. A proxy
//! killed in that window leaves the low value behind; CHECK's `settings-differ` names it.

use super::execute::ms;
use super::pool::{s, Cmd, Pool};
use crate::admin::jobs::Job;
use crate::admin::survey::NodeState;
use crate::cluster::slots::SLOT_COUNT;
use crate::route::resp::Value;
use anyhow::bail;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// The cluster-node-timeout (ms) a master runs with while it waits to turn ok: Redis clamps
/// the rejoin delay to at least `CLUSTER_MIN_REJOIN_DELAY` 500 ms, so a smaller value would
/// shorten nothing and only make the node quicker to mark its peers failing.
pub const REJOIN_TIMEOUT_MS: u64 = 500;

/// The setting, as `CONFIG` names it.
const SETTING: &str = "cluster-node-timeout";

/// Whether node `n` is a master that owns slots, sees every slot assigned and none failing,
/// and still reports `cluster_state` other than ok: what is left for it is Redis's rejoin
/// delay (or the 2 s after its start, which the setting does not touch).
pub fn waits_out_delay(n: &NodeState) -> bool {
    let Some(me) = n.reachable().then(|| n.myself()).flatten() else {
        return false;
    };
    let info = |k: &str| n.cluster_info.get(k).map(String::as_str);
    me.is_master()
        && !me.slots.is_empty()
        && info("cluster_state") != Some("ok")
        && info("cluster_slots_assigned") == Some(&SLOT_COUNT.to_string())
        && info("cluster_slots_fail").is_none_or(|f| f == "0")
}

/// The value of a `CONFIG GET cluster-node-timeout` reply, in ms.
pub fn parse_timeout(v: &Value) -> Option<u64> {
    match v {
        Value::Array(Some(items)) => match items.as_slice() {
            [name, value] if name.text().ok()?.eq_ignore_ascii_case(SETTING) => {
                value.text().ok()?.trim().parse().ok()
            }
            _ => None,
        },
        _ => None,
    }
}

/// The lowered nodes of one create, and what to tell the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejoin {
    /// Node index -> the operator's value, for the nodes whose value is lowered now.
    pub lowered: BTreeMap<usize, u64>,
    /// Nodes left alone from now on: restored, `CONFIG` refused, or nothing to gain.
    pub settled: BTreeSet<usize>,
    /// Node index -> the value set back, for every node lowered and restored.
    pub restored: BTreeMap<usize, u64>,
    /// When the first node was lowered (for the log).
    first: Option<Instant>,
}

impl Rejoin {
    /// Nodes to lower now: waiting out the delay, and neither lowered nor settled yet.
    pub fn to_lower(&self, listed: &[NodeState]) -> Vec<usize> {
        (0..listed.len())
            .filter(|i| !self.lowered.contains_key(i) && !self.settled.contains(i))
            .filter(|&i| waits_out_delay(&listed[i]))
            .collect()
    }

    /// Lowered nodes to restore now: they report `cluster_state:ok`, or they no longer wait
    /// for the delay (they lost a slot or their role; the low value would only linger).
    pub fn to_restore(&self, listed: &[NodeState]) -> Vec<usize> {
        self.lowered
            .keys()
            .copied()
            .filter(|&i| {
                listed.get(i).is_some_and(|n| {
                    n.reachable()
                        && (n.cluster_info.get("cluster_state").map(String::as_str) == Some("ok")
                            || !waits_out_delay(n))
                })
            })
            .collect()
    }

    /// One round after a poll: restores the lowered nodes that turned ok, lowers the ones that
    /// now wait only for the delay. Failures are logged; a node whose restore failed stays in
    /// `lowered` and is retried here and by [`Rejoin::restore_all`].
    pub(super) async fn tend(&mut self, pool: &mut Pool, listed: &[NodeState], job: &Job) {
        let ready = self.to_restore(listed);
        if !ready.is_empty() {
            let done = self.restore(pool, &ready, job).await;
            if !done.is_empty() {
                job.log(format!(
                    "rejoin: {SETTING} restored on {} {}",
                    describe(pool, &done, &self.restored),
                    self.first
                        .map(|t| format!("({} ms after the first was lowered)", ms(t.elapsed())))
                        .unwrap_or_default()
                ));
            }
        }
        let due = self.to_lower(listed);
        if !due.is_empty() {
            self.lower(pool, &due, job).await;
        }
    }

    /// Reads each node's value, then lowers those above [`REJOIN_TIMEOUT_MS`]; a node whose
    /// `CONFIG` fails is settled (left as it is).
    async fn lower(&mut self, pool: &mut Pool, due: &[usize], job: &Job) {
        let get: Cmd = vec![s("CONFIG"), s("GET"), s(SETTING)];
        let mut originals = BTreeMap::new();
        for (i, r) in pool
            .run(due.iter().map(|&i| (i, vec![get.clone()])).collect())
            .await
        {
            let value = r
                .as_ref()
                .ok()
                .and_then(|v| v.first())
                .and_then(parse_timeout);
            match value {
                Some(v) if v > REJOIN_TIMEOUT_MS => {
                    originals.insert(i, v);
                }
                // Already at Redis's smallest rejoin delay: nothing to gain.
                Some(_) => {
                    self.settled.insert(i);
                }
                None => {
                    self.settled.insert(i);
                    job.log(format!(
                        "rejoin: CONFIG GET {SETTING} on {} failed ({}); it waits out Redis's \
                         rejoin delay",
                        pool.addr(i),
                        failure(r)
                    ));
                }
            }
        }
        let set: Cmd = vec![
            s("CONFIG"),
            s("SET"),
            s(SETTING),
            REJOIN_TIMEOUT_MS.to_string(),
        ];
        let mut lowered = Vec::new();
        for (i, r) in pool
            .run(originals.keys().map(|&i| (i, vec![set.clone()])).collect())
            .await
        {
            match (r, originals.get(&i)) {
                (Ok(v), Some(&old)) if !matches!(v.first(), Some(Value::Error(_)) | None) => {
                    self.lowered.insert(i, old);
                    lowered.push(i);
                }
                (r, _) => {
                    // A SET that timed out may still have been applied: set the value back
                    // later like any lowered node (it is the value just read).
                    if r.is_err() {
                        if let Some(&old) = originals.get(&i) {
                            self.lowered.insert(i, old);
                        }
                    } else {
                        self.settled.insert(i);
                    }
                    job.log(format!(
                        "rejoin: CONFIG SET {SETTING} on {} failed ({}); it waits out Redis's \
                         rejoin delay",
                        pool.addr(i),
                        failure(r)
                    ));
                }
            }
        }
        if !lowered.is_empty() {
            self.first.get_or_insert_with(Instant::now);
            job.log(format!(
                "rejoin: {SETTING} lowered to {REJOIN_TIMEOUT_MS} ms on {} (they see every slot \
                 and wait out Redis's rejoin delay)",
                describe(pool, &lowered, &self.lowered)
            ));
        }
    }

    /// Sets the operator's value back on `nodes`; returns the ones restored.
    async fn restore(&mut self, pool: &mut Pool, nodes: &[usize], job: &Job) -> Vec<usize> {
        let batches = nodes
            .iter()
            .filter_map(|&i| {
                let v = self.lowered.get(&i)?;
                Some((
                    i,
                    vec![vec![s("CONFIG"), s("SET"), s(SETTING), v.to_string()]],
                ))
            })
            .collect();
        let mut done = Vec::new();
        for (i, r) in pool.run(batches).await {
            match r {
                Ok(v) if !matches!(v.first(), Some(Value::Error(_)) | None) => {
                    if let Some(old) = self.lowered.remove(&i) {
                        self.restored.insert(i, old);
                        self.settled.insert(i);
                        done.push(i);
                    }
                }
                r => job.log(format!(
                    "rejoin: restoring {SETTING} on {} failed ({}); retrying",
                    pool.addr(i),
                    failure(r)
                )),
            }
        }
        done.sort_unstable();
        done
    }

    /// Restores every node still lowered (the create's last word on the setting, whatever
    /// happened); an error names each node left lowered and the command that fixes it.
    pub(super) async fn restore_all(&mut self, pool: &mut Pool, job: &Job) -> anyhow::Result<()> {
        if self.lowered.is_empty() {
            return Ok(());
        }
        let left: Vec<usize> = self.lowered.keys().copied().collect();
        let done = self.restore(pool, &left, job).await;
        if !done.is_empty() {
            job.log(format!(
                "rejoin: {SETTING} restored on {}",
                describe(pool, &done, &self.restored)
            ));
        }
        if self.lowered.is_empty() {
            return Ok(());
        }
        bail!(
            "{SETTING} could not be set back on {}: PROXY CREATE lowered it to \
             {REJOIN_TIMEOUT_MS} ms while the node waited out Redis's rejoin delay; send it \
             CONFIG SET {SETTING} <value> with the value given",
            self.lowered
                .iter()
                .map(|(&i, v)| format!("{} (was {v})", pool.addr(i)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The report's line about the setting, when any node was lowered.
    pub fn report_line(&self, addr: impl Fn(usize) -> String) -> Option<String> {
        if self.restored.is_empty() {
            return None;
        }
        let values: BTreeSet<u64> = self.restored.values().copied().collect();
        Some(format!(
            "note {SETTING} was lowered to {REJOIN_TIMEOUT_MS} ms on {} master(s) while they \
             waited out Redis's rejoin delay, and set back to {} ms: {}",
            self.restored.len(),
            values
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("/"),
            self.restored
                .keys()
                .map(|&i| addr(i))
                .collect::<Vec<_>>()
                .join(" ")
        ))
    }
}

/// `n node(s): addr (value) ...` for the log.
fn describe(pool: &Pool, nodes: &[usize], values: &BTreeMap<usize, u64>) -> String {
    format!(
        "{} node(s): {}",
        nodes.len(),
        nodes
            .iter()
            .map(|&i| match values.get(&i) {
                Some(v) => format!("{} ({v} ms)", pool.addr(i)),
                None => pool.addr(i).to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Why a `CONFIG` call failed, for the log.
fn failure(r: anyhow::Result<Vec<Value>>) -> String {
    match r {
        Err(e) => format!("{e:#}"),
        Ok(v) => match v.first() {
            Some(Value::Error(e)) => e.clone(),
            Some(_) => "unexpected reply".to_string(),
            None => "no reply".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::parse_cluster_nodes;
    use bytes::Bytes;

    /// Node `i` at 127.0.0.2:700i in its own view: a master with `slots` (or a replica), with
    /// `state` and `assigned` in CLUSTER INFO.
    fn node(i: usize, master: bool, slots: &str, state: &str, assigned: usize) -> NodeState {
        let role = if master {
            "master -".to_string()
        } else {
            format!("slave {:0>40}", 99)
        };
        let text = format!(
            "{:0>40} 127.0.0.2:{}@{} myself,{role} 0 0 1 connected {slots}\n",
            i + 1,
            7000 + i,
            17000 + i
        );
        NodeState {
            addr: format!("127.0.0.2:{}", 7000 + i),
            cluster_enabled: true,
            view: parse_cluster_nodes(&text, "127.0.0.2").expect("parse"),
            cluster_info: [
                ("cluster_state".to_string(), state.to_string()),
                ("cluster_slots_assigned".to_string(), assigned.to_string()),
                ("cluster_slots_fail".to_string(), "0".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_masters_that_see_every_slot_and_are_not_ok_wait_for_the_delay() {
        assert!(waits_out_delay(&node(0, true, "0-5460", "fail", 16384)));
        // Still joining: the rest of the slot map is what it waits for.
        assert!(!waits_out_delay(&node(0, true, "0-5460", "fail", 10922)));
        assert!(!waits_out_delay(&node(0, true, "0-5460", "ok", 16384)));
        // Replicas and masters without slots have no rejoin delay to wait out.
        assert!(!waits_out_delay(&node(0, false, "", "fail", 16384)));
        assert!(!waits_out_delay(&node(0, true, "", "fail", 16384)));
        let mut failing = node(0, true, "0-5460", "fail", 16384);
        failing
            .cluster_info
            .insert("cluster_slots_fail".into(), "5461".into());
        assert!(!waits_out_delay(&failing));
        assert!(!waits_out_delay(&NodeState::unreachable("a:1", "down")));
    }

    #[test]
    fn lower_once_restore_when_ok_or_no_longer_waiting() {
        let mut r = Rejoin::default();
        let listed = vec![
            node(0, true, "0-5460", "fail", 16384),
            node(1, true, "5461-10922", "fail", 10922),
            node(2, true, "10923-16383", "fail", 16384),
            node(3, false, "", "fail", 16384),
        ];
        assert_eq!(r.to_lower(&listed), vec![0, 2]);
        r.lowered.insert(0, 5000);
        r.settled.insert(2); // CONFIG refused there
        assert_eq!(r.to_lower(&listed), Vec::<usize>::new());
        assert_eq!(r.to_restore(&listed), Vec::<usize>::new());
        let mut later = listed.clone();
        later[0] = node(0, true, "0-5460", "ok", 16384);
        assert_eq!(r.to_restore(&later), vec![0]);
        // Lost its slots (or its role): nothing left to wait for, so no reason to stay low.
        later[0] = node(0, true, "", "fail", 16384);
        assert_eq!(r.to_restore(&later), vec![0]);
        // Unreachable: cannot be restored now (restore_all tries again at the end).
        later[0] = NodeState::unreachable("127.0.0.2:7000", "down");
        assert_eq!(r.to_restore(&later), Vec::<usize>::new());
    }

    #[test]
    fn config_get_reply_and_report_line() {
        let bulk = |s: &str| Value::Bulk(Some(Bytes::from(s.to_string())));
        let reply = |v: &str| Value::Array(Some(vec![bulk("cluster-node-timeout"), bulk(v)]));
        assert_eq!(parse_timeout(&reply("15000")), Some(15000));
        assert_eq!(parse_timeout(&reply("x")), None);
        assert_eq!(parse_timeout(&Value::Array(Some(vec![]))), None);
        assert_eq!(
            parse_timeout(&Value::Error("ERR unknown command".into())),
            None
        );
        let mut r = Rejoin::default();
        assert_eq!(r.report_line(|i| i.to_string()), None);
        r.restored.insert(0, 5000);
        r.restored.insert(2, 15000);
        assert_eq!(
            r.report_line(|i| format!("n{i}")).as_deref(),
            Some(
                "note cluster-node-timeout was lowered to 500 ms on 2 master(s) while they \
                 waited out Redis's rejoin delay, and set back to 5000/15000 ms: n0 n2"
            )
        );
    }
}
