//! CREATE's unit tests: arguments, and decide for each situation from hand-built surveys.

use super::*;
use crate::admin::placement::Plan;
use crate::admin::survey::Survey;
use crate::cluster::parse_cluster_nodes;
use std::collections::BTreeMap;

fn id(i: usize) -> String {
    format!("{:0>40}", i + 1)
}

fn specs(hosts: usize, per_host: usize) -> Vec<NodeSpec> {
    let mut v = Vec::new();
    for h in 0..hosts {
        for k in 0..per_host {
            v.push(NodeSpec::new(format!("127.0.0.{}", h + 2), 7000 + k as u16));
        }
    }
    v
}

/// Node `i` alone and empty.
fn fresh(n: &NodeSpec, i: usize) -> NodeState {
    let text = format!(
        "{} :{}@{} myself,master - 0 0 0 connected\n",
        id(i),
        n.port,
        n.port + 10000
    );
    NodeState {
        addr: n.addr(),
        cluster_enabled: true,
        view: parse_cluster_nodes(&text, &n.ip).expect("parse"),
        cluster_info: BTreeMap::new(),
        replication: BTreeMap::new(),
        ..Default::default()
    }
}

fn fresh_survey(nodes: &[NodeSpec]) -> Survey {
    Survey {
        nodes: nodes.iter().enumerate().map(|(i, n)| fresh(n, i)).collect(),
    }
}

/// The state after executing `work` completely: every node sees the planned cluster.
fn finished(nodes: &[NodeSpec], plan: &Plan) -> Survey {
    let roles = plan.roles(nodes.len());
    let line = |j: usize, me: bool| {
        let (k, m) = roles[j].expect("role");
        let sh = &plan.shards[k];
        let n = &nodes[j];
        format!(
            "{} {}:{}@{} {}{} {} 0 0 {} connected {}\n",
            id(j),
            n.ip,
            n.port,
            n.port + 10000,
            if me { "myself," } else { "" },
            if m { "master" } else { "slave" },
            if m { "-".to_string() } else { id(sh.master) },
            sh.epoch,
            if m {
                format!("{}-{}", sh.slots.0, sh.slots.1)
            } else {
                String::new()
            }
        )
    };
    Survey {
        nodes: (0..nodes.len())
            .map(|i| {
                let text: String = (0..nodes.len()).map(|j| line(j, i == j)).collect();
                NodeState {
                    addr: nodes[i].addr(),
                    cluster_enabled: true,
                    view: parse_cluster_nodes(&text, &nodes[i].ip).expect("parse"),
                    replication: [("master_link_status".to_string(), "up".to_string())].into(),
                    cluster_info: [("cluster_state".to_string(), "ok".to_string())].into(),
                    ..Default::default()
                }
            })
            .collect(),
    }
}

#[test]
fn parses_arguments() {
    let a: Vec<Bytes> = "REPLICAS 1 NODES 127.0.0.2:7000 HOST rack-a 127.0.0.3:7000 DRYRUN ASYNC"
        .split(' ')
        .map(|s| Bytes::from(s.to_string()))
        .collect();
    let r = parse_args(&a).expect("parse");
    assert_eq!(r.replicas, 1);
    assert_eq!(r.nodes.len(), 2);
    assert_eq!(r.nodes[0].host, "rack-a");
    assert_eq!(r.nodes[1].host, "127.0.0.3");
    assert!(r.dryrun && r.detach);
    let bad: Vec<Bytes> = vec![Bytes::from("NODES"), Bytes::from("x")];
    assert!(parse_args(&bad)
        .unwrap_err()
        .to_string()
        .contains("bad node address"));
    let bad: Vec<Bytes> = vec![Bytes::from("NODES"), Bytes::from("a:1")];
    assert!(parse_args(&bad)
        .unwrap_err()
        .to_string()
        .contains("REPLICAS is required"));
}

#[test]
fn fresh_create_steps() {
    let nodes = specs(3, 2);
    let w = decide(&nodes, 1, &fresh_survey(&nodes)).expect("decide");
    assert_eq!(w.mode, Mode::Fresh);
    let plan = w.plan.clone().expect("plan");
    let count = |f: fn(&Step) -> bool| w.steps.iter().filter(|s| f(s)).count();
    assert_eq!(count(|s| matches!(s, Step::SetEpoch { .. })), 6);
    assert_eq!(count(|s| matches!(s, Step::AddSlots { .. })), 3);
    assert_eq!(count(|s| matches!(s, Step::Meet { .. })), 5);
    assert_eq!(count(|s| matches!(s, Step::Replicate { .. })), 3);
    assert_eq!(w.steps.last(), Some(&Step::WaitLinks));
    // Meets all go to one seed, a master.
    let seed = plan.shards[0].master;
    assert!(w.steps.iter().all(|s| match s {
        Step::Meet { seed: x, .. } => *x == seed,
        _ => true,
    }));
    // A finished cluster has nothing left.
    let done = decide(&nodes, 1, &finished(&nodes, &plan)).expect("decide");
    assert_eq!(done.mode, Mode::Resume);
    assert!(!done.changes_anything(), "{:?}", done.steps);
}

#[test]
fn resume_after_meet_only_replicates() {
    let nodes = specs(3, 2);
    let w = decide(&nodes, 1, &fresh_survey(&nodes)).expect("decide");
    let plan = w.plan.expect("plan");
    let mut s = finished(&nodes, &plan);
    // Killed after MEET: replicas are still empty masters everywhere.
    for n in &mut s.nodes {
        for l in &mut n.view {
            if !l.is_master() {
                l.flags = l
                    .flags
                    .iter()
                    .map(|f| {
                        if f == "slave" {
                            "master".to_string()
                        } else {
                            f.clone()
                        }
                    })
                    .collect();
                l.master_id = None;
            }
        }
    }
    let w = decide(&nodes, 1, &s).expect("decide");
    assert_eq!(w.mode, Mode::Resume);
    let kinds: Vec<&Step> = w
        .steps
        .iter()
        .filter(|s| !matches!(s, Step::Replicate { .. }))
        .collect();
    assert_eq!(kinds, vec![&Step::WaitJoined, &Step::WaitLinks]);
    assert_eq!(
        w.steps
            .iter()
            .filter(|s| matches!(s, Step::Replicate { .. }))
            .count(),
        3
    );
}

#[test]
fn refusals_name_the_node() {
    let mut nodes = specs(2, 5);
    nodes.pop();
    let e = decide(&nodes, 2, &fresh_survey(&nodes))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not enough distinct hosts"), "{e}");

    let nodes = specs(3, 2);
    let mut s = fresh_survey(&nodes);
    s.nodes[4].dbsize = 1;
    let e = decide(&nodes, 1, &s).unwrap_err().to_string();
    assert!(e.contains("127.0.0.4:7000 holds 1 key"), "{e}");

    let mut s = fresh_survey(&nodes);
    s.nodes[2] = NodeState::unreachable(&nodes[2].addr(), "connection refused");
    let e = decide(&nodes, 1, &s).unwrap_err().to_string();
    assert!(e.contains("node 127.0.0.3:7000 is unreachable"), "{e}");

    let mut s = fresh_survey(&nodes);
    s.nodes[1].cluster_enabled = false;
    assert!(decide(&nodes, 1, &s)
        .unwrap_err()
        .to_string()
        .contains("127.0.0.2:7001 is not cluster-enabled"));

    // A node that knows a reachable foreign node belongs to another cluster.
    let mut s = fresh_survey(&nodes);
    let foreign = parse_cluster_nodes(
        "ffffffffffffffffffffffffffffffffffffffff 127.0.0.9:7000@17000 master - 0 0 1 connected 0-16383",
        "",
    )
    .expect("line");
    s.nodes[3].view.extend(foreign.clone());
    let mut other = fresh(&NodeSpec::new("127.0.0.9", 7000), 99);
    other.view[0].id = foreign[0].id.clone();
    s.nodes.push(other);
    let e = decide(&nodes, 1, &s).unwrap_err().to_string();
    assert!(
        e.contains("node 127.0.0.3:7001 already belongs to another cluster"),
        "{e}"
    );

    // Too few nodes for 3 masters.
    let nodes = specs(2, 2);
    let e = decide(&nodes, 1, &fresh_survey(&nodes))
        .unwrap_err()
        .to_string();
    assert!(e.contains("too few masters"), "{e}");
}

#[test]
fn contradicting_slots_are_not_overwritten() {
    let nodes = specs(3, 2);
    let w = decide(&nodes, 1, &fresh_survey(&nodes)).expect("decide");
    let plan = w.plan.expect("plan");
    let mut s = fresh_survey(&nodes);
    // A planned replica already owns slots (someone else's work): refused, not overwritten.
    let r = plan.shards[0].replicas[0];
    s.nodes[r].view[0].slots = vec![(0, 100)];
    let e = decide(&nodes, 1, &s).unwrap_err().to_string();
    assert!(
        e.contains("owns slots 0-100 but the plan makes it a replica"),
        "{e}"
    );
    // Alone with a partial slot set and no fresh nodes around: adopt finds slots unowned.
    let mut s = finished(&nodes, &plan);
    for n in &mut s.nodes {
        for l in &mut n.view {
            if l.slots == vec![plan.shards[2].slots] {
                l.slots = vec![(plan.shards[2].slots.0, plan.shards[2].slots.0 + 9)];
            }
        }
    }
    let e = decide(&nodes, 1, &s).unwrap_err().to_string();
    assert!(e.contains("have no owner"), "{e}");
}

#[test]
fn missing_rendered_master_is_promoted() {
    let nodes = specs(3, 2);
    let plan = decide(&nodes, 1, &fresh_survey(&nodes))
        .expect("decide")
        .plan
        .expect("plan");
    let full = finished(&nodes, &plan);
    let gone = plan.shards[1].master;
    let replica = plan.shards[1].replicas[0];
    let listed: Vec<NodeSpec> = (0..nodes.len())
        .filter(|&i| i != gone)
        .map(|i| nodes[i].clone())
        .collect();
    let mut s = Survey {
        nodes: full
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone)
            .map(|(_, n)| n.clone())
            .collect(),
    };
    s.nodes.push(NodeState::unreachable(
        &nodes[gone].addr(),
        "connection refused",
    ));
    let w = decide(&listed, 1, &s).expect("decide");
    assert_eq!(w.mode, Mode::Adopt);
    let want = listed
        .iter()
        .position(|n| *n == nodes[replica])
        .expect("replica listed");
    assert_eq!(
        w.steps,
        vec![
            Step::Takeover {
                node: want,
                master: nodes[gone].addr()
            },
            Step::WaitJoined
        ]
    );
}

#[test]
fn convergence_problems() {
    let nodes = specs(3, 2);
    let plan = decide(&nodes, 1, &fresh_survey(&nodes))
        .expect("decide")
        .plan
        .expect("plan");
    let mut s = finished(&nodes, &plan);
    let ids: Vec<String> = (0..nodes.len()).map(id).collect();
    assert!(join_problems(&s.nodes, &ids).is_empty());
    assert!(link_problems(&s.nodes).is_empty());
    s.nodes[0].view.retain(|l| l.id != id(3));
    s.nodes[1].view[2].flags.push("fail?".into());
    let p = join_problems(&s.nodes, &ids);
    assert!(
        p.iter()
            .any(|x| x == "127.0.0.2:7000 does not see 127.0.0.3:7001"),
        "{p:?}"
    );
    assert!(
        p.iter().any(|x| x.contains("sees 127.0.0.3:7000 as fail?")),
        "{p:?}"
    );
    let r = plan.shards[0].replicas[0];
    s.nodes[r]
        .replication
        .insert("master_link_status".into(), "down".into());
    assert!(!link_problems(&s.nodes).is_empty());
}
