//! The replica health poller: while reads may go to replicas, it asks every master that has
//! replicas and every such replica for `INFO replication` (all at once, each on a connection
//! it keeps), and publishes a [`ReplicaHealth`] after each round (the rules are in
//! [`crate::cluster::replica_health`]). Invariant: with no reason to poll it holds no
//! connections and publishes an empty snapshot, in which no replica is usable.

use crate::backend::node_client::NodeClient;
use crate::cluster::replica_health::{
    lag, on_hosts, parse_info, poll_interval, trim, usable, History, MasterHealth, ReplicaHealth,
    ReplicaState, ReplicationInfo,
};
use crate::route::replica_choice::ReadFrom;
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether reads may go to replicas at all now.
fn wanted(shared: &Shared) -> bool {
    let cfg = shared.settings.live.get();
    ReadFrom::parse(&cfg.read_from).unwrap_or_default() != ReadFrom::Master
        || shared.topology.replica_reads_wanted.load(Relaxed)
}

/// Runs forever; spawn it on the control runtime.
pub async fn run(shared: Arc<Shared>) {
    let mut clients: HashMap<Arc<str>, NodeClient> = HashMap::new();
    let mut histories: HashMap<Arc<str>, History> = HashMap::new();
    let mut round = 0u64;
    loop {
        let max_lag = shared.settings.live.get().max_replica_lag;
        if wanted(&shared) {
            round += 1;
            poll(&shared, &mut clients, &mut histories, round, max_lag).await;
        } else if !clients.is_empty() || !histories.is_empty() {
            clients.clear();
            histories.clear();
            round += 1;
            shared.topology.replicas.store(Arc::new(ReplicaHealth {
                round,
                ..Default::default()
            }));
        }
        tokio::time::sleep(poll_interval(max_lag)).await;
    }
}

/// One poll of every master with replicas and of its replicas, all at once.
async fn poll(
    shared: &Arc<Shared>,
    clients: &mut HashMap<Arc<str>, NodeClient>,
    histories: &mut HashMap<Arc<str>, History>,
    round: u64,
    max_lag: Duration,
) {
    let map = shared.topology.map.load_full();
    let timeout = shared
        .settings
        .live
        .connect_timeout()
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    let mut addrs: Vec<Arc<str>> = Vec::new();
    for n in map.nodes.iter().filter(|n| !n.replicas.is_empty()) {
        addrs.push(Arc::clone(&n.addr));
        addrs.extend(n.replicas.iter().cloned());
    }
    addrs.sort();
    addrs.dedup();
    clients.retain(|a, _| addrs.contains(a));
    histories.retain(|a, _| addrs.contains(a));
    let mut tasks = Vec::with_capacity(addrs.len());
    for addr in &addrs {
        let client = clients.remove(addr);
        let dialer = Arc::clone(&shared.settings.dialer);
        let addr = Arc::clone(addr);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ask = async {
                let mut c = match client {
                    Some(c) => c,
                    None => NodeClient::connect(&dialer, &addr, timeout).await?,
                };
                let text = c.call_text(&["INFO", "replication"]).await?;
                anyhow::Ok((c, text))
            };
            let answer = tokio::time::timeout(timeout, ask)
                .await
                .ok()
                .and_then(|r| r.ok());
            (addr, sent, answer)
        }));
    }
    let mut infos: HashMap<Arc<str>, ReplicationInfo> = HashMap::new();
    for t in tasks {
        let Ok((addr, sent, answer)) = t.await else {
            continue;
        };
        let Some((client, text)) = answer else {
            continue;
        };
        let info = parse_info(&text);
        if let (true, Some(off)) = (info.master, info.master_offset) {
            histories
                .entry(Arc::clone(&addr))
                .or_default()
                .push_back((sent, off));
        }
        clients.insert(Arc::clone(&addr), client);
        infos.insert(addr, info);
    }
    let now = Instant::now();
    let empty = History::new();
    // Read each round, so a changed `prefer_hosts` takes effect with the next poll.
    let prefer = shared.settings.live.get().prefer_hosts.clone();
    let masters = map
        .nodes
        .iter()
        .map(|n| {
            let history = histories.get(&n.addr).unwrap_or(&empty);
            MasterHealth {
                addr: Arc::clone(&n.addr),
                preferred: on_hosts(&n.addr, &prefer),
                replicas: n
                    .replicas
                    .iter()
                    .map(|r| {
                        let ok = infos.get(r).is_some_and(|info| {
                            let l = info.replica_offset.and_then(|o| lag(history, o, now));
                            usable(info, l, max_lag)
                        });
                        ReplicaState {
                            addr: Arc::clone(r),
                            usable: ok,
                            preferred: on_hosts(r, &prefer),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    for h in histories.values_mut() {
        trim(h, now, max_lag);
    }
    shared.topology.replicas.store(Arc::new(ReplicaHealth {
        round,
        map_version: map.version,
        masters,
    }));
}
