//! Running a plan against the nodes: one `CLUSTER FAILOVER` at a time, waiting until every
//! node shows the new roles and the demoted master has re-synced, renewing the lease, and
//! re-planning from live state after each move.

use super::model::{Move, Plan};
use super::plan::plan;
use super::{node_timeout, read_topology, Live, Options};
use crate::admin::jobs::Job;
use crate::admin::lease::Lease;
use crate::admin::report::Report;
use crate::backend::node_client::NodeClient;
use crate::cluster::{parse_cluster_nodes, NodeLine};
use crate::net::dialer::Dialer;
use crate::shared::Shared;
use anyhow::{bail, Context};
use std::time::{Duration, Instant};

/// Runs the plan from `live` (already re-read under the lease), one failover at a time,
/// re-planning after each, until nothing is left, `MAXMOVES` is reached or the cluster
/// diverges from the model; returns the report read back from the cluster.
pub(super) async fn execute(
    shared: &Shared,
    opts: &Options,
    job: &Job,
    lease: &mut Lease,
    mut live: Live,
    first: &Plan,
) -> anyhow::Result<Report> {
    let mut done: Vec<Move> = Vec::new();
    // Re-planning after each failover continues the first plan's count when the cluster
    // behaves as modelled; if it does not (links that stay down, someone else failing nodes
    // over), stop well before a runaway and let the operator look.
    let safety = first.moves.len() * 2 + 4;
    loop {
        if done.len() >= safety {
            job.log(format!(
                "stopping after {} failovers: the cluster keeps diverging from the plan",
                done.len()
            ));
            break;
        }
        let budget = opts.max_moves.map(|k| k.saturating_sub(done.len()));
        let now = plan(
            &live.topo,
            &Options {
                max_moves: budget,
                ..opts.clone()
            },
        );
        job.set_total(done.len() + now.moves.len());
        let Some(mv) = now.moves.first() else { break };
        lease.renew_if_due(job).await?;
        let n = done.len() + 1;
        failover(
            opts,
            job,
            lease,
            &live,
            mv,
            &shared.settings.dialer,
            node_timeout(shared),
        )
        .await
        .with_context(|| {
            format!(
                "failover {n} ({}); {} failovers were done before it; re-run to continue",
                mv.describe_step(),
                done.len()
            )
        })?;
        job.step_done(format!("move {n} {}", mv.describe_step()));
        done.push(mv.clone());
        shared.topology.trigger_refresh();
        // Read from the promoted replica first: it knows the new roles for sure.
        live = read_topology(shared, opts, std::slice::from_ref(&mv.replica_addr))
            .await
            .with_context(|| format!("re-reading the topology after failover {n}"))?;
    }
    // Verify from live state: what is left to do without a move cap.
    let left = plan(
        &live.topo,
        &Options {
            max_moves: None,
            ..opts.clone()
        },
    );
    let verdict = if done.is_empty() {
        format!("NOTHING TO DO spread {}", left.spread_before())
    } else {
        format!(
            "OK moves {} spread {} -> {}",
            done.len(),
            first.spread_before(),
            left.spread_before()
        )
    };
    let mut lines = vec![verdict];
    lines.extend(
        done.iter()
            .enumerate()
            .map(|(i, m)| format!("move {} {}", i + 1, m.describe_step())),
    );
    // Islands: before as first read, after as read back now.
    let loads = live.topo.masters_per_host();
    let mut shown = first.clone();
    for isl in shown.islands.iter_mut() {
        isl.after = isl
            .hosts
            .iter()
            .map(|h| loads.get(h).copied().unwrap_or(0))
            .collect();
    }
    shown.truncated = !left.moves.is_empty();
    shown.notes = left.notes;
    lines.extend(shown.island_lines());
    let json = shown.json_value(&lines[0], &done);
    Ok(Report::lines(lines).with_json(json))
}

/// Sends `CLUSTER FAILOVER` to the replica, then waits until every reachable node shows the
/// new roles and the demoted master (and the shard's other replicas) have re-synced.
async fn failover(
    opts: &Options,
    job: &Job,
    lease: &mut Lease,
    live: &Live,
    mv: &Move,
    dialer: &Dialer,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut c = NodeClient::connect(dialer, &mv.replica_addr, timeout).await?;
    let args: &[&str] = if mv.force {
        &["CLUSTER", "FAILOVER", "FORCE"]
    } else {
        &["CLUSTER", "FAILOVER"]
    };
    c.call_text(args).await?;
    job.log(format!("sent {} to {}", args.join(" "), mv.replica_addr));
    let deadline = Instant::now() + opts.timeout;

    // Every node that is not known to be failing must see the new roles.
    let watchers: Vec<String> = live
        .lines
        .iter()
        .filter(|l| !l.is_failing())
        .map(NodeLine::addr)
        .collect();
    let mut pending = watchers;
    loop {
        let mut still = Vec::new();
        for addr in &pending {
            let ok = async {
                let mut c = NodeClient::connect(dialer, addr, timeout).await?;
                let text = c.call_text(&["CLUSTER", "NODES"]).await?;
                let ip = addr.rsplit_once(':').map_or(addr.as_str(), |x| x.0);
                let lines = parse_cluster_nodes(&text, ip)?;
                let new_ok = lines
                    .iter()
                    .any(|l| l.id == mv.replica_id && l.is_master() && !l.slots.is_empty());
                let old_ok = lines.iter().any(|l| {
                    l.id == mv.master_id && l.master_id.as_deref() == Some(&mv.replica_id)
                });
                anyhow::Ok(new_ok && old_ok)
            }
            .await
            .unwrap_or(false);
            if !ok {
                still.push(addr.clone());
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "after {:?}, {} node(s) do not show {} as master and {} as its replica: {}",
                opts.timeout,
                pending.len(),
                mv.replica_addr,
                mv.master_addr,
                pending.join(", ")
            );
        }
        lease.renew_if_due(job).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    job.log(format!(
        "every node shows {} as master of the shard",
        mv.replica_addr
    ));

    // The demoted master and the shard's other replicas re-sync from the new master.
    let followers: Vec<String> = live
        .topo
        .nodes
        .iter()
        .filter(|n| {
            n.id == mv.master_id
                || (n.master_id.as_deref() == Some(&mv.master_id)
                    && n.id != mv.replica_id
                    && n.link_up)
        })
        .map(|n| n.addr.clone())
        .collect();
    for addr in followers {
        loop {
            let up = async {
                let mut c = NodeClient::connect(dialer, &addr, timeout).await?;
                let info = c.call_text(&["INFO", "replication"]).await?;
                anyhow::Ok(info.lines().any(|x| x.trim() == "master_link_status:up"))
            }
            .await
            .unwrap_or(false);
            if up {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{addr} has not re-synced with the new master {} within {:?}",
                    mv.replica_addr,
                    opts.timeout
                );
            }
            lease.renew_if_due(job).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
