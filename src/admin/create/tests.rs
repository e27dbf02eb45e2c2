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
    assert_eq!(count(|s| matches!(s, Step::Replicate { .. })), 3);
    assert_eq!(w.steps.last(), Some(&Step::WaitLinks));
    // A full mesh: every pair is met exactly once, a replica meets its own master (listed
    // first) and every master, and every MEET comes before the first REPLICATE.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for st in &w.steps {
        if let Step::Meet { node, others } = st {
            pairs.extend(others.iter().map(|&o| (*node.min(&o), *node.max(&o))));
        }
    }
    pairs.sort_unstable();
    let n = nodes.len();
    let all: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect();
    assert_eq!(pairs, all);
    for shard in &plan.shards {
        for &r in &shard.replicas {
            let Some(Step::Meet { others, .. }) = w
                .steps
                .iter()
                .find(|s| matches!(s, Step::Meet { node, .. } if *node == r))
            else {
                panic!("replica {r} sends no MEET: {:?}", w.steps);
            };
            assert_eq!(others[0], shard.master, "own master first");
            for m in plan.shards.iter().map(|s| s.master) {
                assert!(others.contains(&m), "replica {r} meets master {m}");
            }
        }
    }
    let last_meet = w.steps.iter().rposition(|s| matches!(s, Step::Meet { .. }));
    let first_rep = w
        .steps
        .iter()
        .position(|s| matches!(s, Step::Replicate { .. }));
    assert!(last_meet < first_rep, "{:?}", w.steps);
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

#[test]
fn meet_sender_is_consistent_and_balanced() {
    // 4 masters, 4 replicas (replica 4+k of master k).
    let role: Vec<Option<usize>> = (0..8).map(|i| (i >= 4).then(|| i - 4)).collect();
    let mut sent = [0usize; 8];
    for a in 0..8 {
        for b in 0..8 {
            if a == b {
                continue;
            }
            let s = meet_sender(a, b, &role);
            assert_eq!(
                s,
                meet_sender(b, a, &role),
                "one sender per pair ({a}, {b})"
            );
            assert!(s == a || s == b);
            if a < b {
                sent[s] += 1;
            }
        }
    }
    // Replicas send to every master; masters and replicas split their own kind evenly.
    assert_eq!(meet_sender(5, 1, &role), 5);
    assert_eq!(meet_sender(0, 6, &role), 6);
    assert_eq!(sent.iter().sum::<usize>(), 28);
    for (i, &k) in sent.iter().enumerate() {
        let expected = if i < 4 { 1..=2 } else { 5..=6 };
        assert!(expected.contains(&k), "node {i} sends {k}: {sent:?}");
    }
}

#[test]
fn meet_queue_is_round_robin_and_skips_known_pairs() {
    let steps = [
        Step::SetEpoch { node: 0, epoch: 1 },
        Step::Meet {
            node: 3,
            others: vec![0, 1, 2],
        },
        Step::Meet {
            node: 4,
            others: vec![1],
        },
    ];
    let mut q = MeetQueue::new(steps.iter().enumerate());
    assert_eq!(q.len(), 4);
    // Each sender's first peer first.
    let (first, done) = q.take(2, |_, _| false);
    assert_eq!(first, vec![(3, 0), (4, 1)]);
    assert_eq!(done, vec![2], "step 2 has no MEET left");
    // A pair that already knows each other is skipped but counted as done.
    let (rest, done) = q.take(5, |a, b| (a, b) == (3, 1));
    assert_eq!(rest, vec![(3, 2)]);
    assert_eq!(done, vec![1]);
    assert!(q.is_empty());
}

/// Node `i`'s view: itself plus the given lines (`id(j) flags master slots`).
fn state(nodes: &[NodeSpec], i: usize, me: &str, others: &[String]) -> NodeState {
    let n = &nodes[i];
    let mut text = format!(
        "{} {}:{}@{} myself,{me}\n",
        id(i),
        n.ip,
        n.port,
        n.port + 10000
    );
    for l in others {
        text.push_str(l);
        text.push('\n');
    }
    NodeState {
        addr: n.addr(),
        cluster_enabled: true,
        view: parse_cluster_nodes(&text, &n.ip).expect("parse"),
        ..Default::default()
    }
}

fn line(nodes: &[NodeSpec], j: usize, rest: &str) -> String {
    let n = &nodes[j];
    format!("{} {}:{}@{} {rest}", id(j), n.ip, n.port, n.port + 10000)
}

#[test]
fn nudges_go_to_nodes_whose_news_is_late() {
    let nodes = specs(3, 1);
    let ids: Vec<String> = (0..3).map(id).collect();
    // 0 is a master with slots, 1 a replica of 0, 2 a master; 2 sees 0 without its slots and
    // 1 as a master, and does not know... everything else is current.
    let listed = vec![
        state(
            &nodes,
            0,
            "master - 0 0 1 connected 0-16383",
            &[
                line(
                    &nodes,
                    1,
                    "slave 0000000000000000000000000000000000000001 0 0 1 connected",
                ),
                line(&nodes, 2, "master - 0 0 2 connected"),
            ],
        ),
        state(
            &nodes,
            1,
            "slave 0000000000000000000000000000000000000001 0 0 1 connected",
            &[
                line(&nodes, 0, "master - 0 0 1 connected 0-16383"),
                line(&nodes, 2, "master - 0 0 2 connected"),
            ],
        ),
        state(
            &nodes,
            2,
            "master - 0 0 2 connected",
            &[
                line(&nodes, 0, "master - 0 0 1 connected"),
                line(&nodes, 1, "master - 0 0 3 connected"),
            ],
        ),
    ];
    let mut got = nudges(&listed, &ids);
    got.sort_unstable();
    assert_eq!(got, vec![(0, 2), (1, 2)]);
    // A node that does not know another gets a nudge, unless a handshake is under way.
    let mut missing = listed.clone();
    missing[2].view.retain(|l| l.id != ids[1]);
    let mut got = nudges(&missing, &ids);
    got.sort_unstable();
    assert_eq!(got, vec![(0, 2), (1, 2)]);
    missing[1].view.extend(
        parse_cluster_nodes(
            &format!(
                "ffffffffffffffffffffffffffffffffffffffff {}:{}@{} handshake - 0 0 0 connected",
                nodes[2].ip,
                nodes[2].port,
                nodes[2].port + 10000
            ),
            "",
        )
        .expect("line"),
    );
    assert_eq!(nudges(&missing, &ids), vec![(0, 2)]);
    assert!(knows(&missing, &ids, 1, 2), "a handshake counts as knowing");
    assert!(!knows(&missing, &ids, 2, 1));
    assert_eq!(handshakes(&missing), 1);
    assert_eq!(
        handshake_problems(&missing),
        vec![format!(
            "{} is still shaking hands with {}",
            nodes[1].addr(),
            nodes[2].addr()
        )]
    );
}

#[test]
fn phases_group_steps() {
    assert_eq!(
        Phase::of(&Step::SetEpoch { node: 0, epoch: 1 }),
        Phase::Setup
    );
    assert_eq!(
        Phase::of(&Step::AddSlots {
            node: 0,
            slots: (0, 1)
        }),
        Phase::Setup
    );
    assert_eq!(
        Phase::of(&Step::Meet {
            node: 0,
            others: vec![1]
        }),
        Phase::Meet
    );
    assert_eq!(Phase::of(&Step::WaitJoined), Phase::Wait);
    assert_eq!(Phase::of(&Step::WaitLinks), Phase::Wait);
}

#[test]
fn meet_step_lines_stay_short() {
    let nodes = specs(6, 2);
    let ids: Vec<String> = (0..nodes.len()).map(id).collect();
    let st = Step::Meet {
        node: 0,
        others: (1..12).collect(),
    };
    let l = step_line(&st, &nodes, &ids);
    assert!(
        l.starts_with("step CLUSTER MEET 127.0.0.2:7001, 127.0.0.3:7000"),
        "{l}"
    );
    assert!(l.ends_with("and 3 more from 127.0.0.2:7000"), "{l}");
}

#[test]
fn claim_names_have_no_spaces_and_start_with_the_prefix() {
    let name = claim_name("create", "127.0.0.1:7000", 12);
    assert!(name.starts_with(CLAIM_PREFIX), "{name}");
    assert!(name.ends_with(":job12"), "{name}");
    assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name}");
    assert!(claim_name("add nodes", "a b\n", 1).starts_with("slotproxy-claim:addnodes:ab:pid"));
}

#[test]
fn rivals_are_other_connections_named_as_claims() {
    let list = "id=3 addr=127.0.0.1:5001 laddr=127.0.0.2:7000 fd=8 name= age=1 cmd=client|list\n\
                id=7 addr=127.0.0.1:5002 laddr=127.0.0.2:7000 fd=9 name=slotproxy-claim:create:127.0.0.1:7001:pid9:job1 age=2\n\
                id=9 addr=127.0.0.1:5003 laddr=127.0.0.2:7000 fd=10 name=slotproxy-claim:create:127.0.0.1:7002:pid8:job4 age=0\n\
                id=11 addr=127.0.0.1:5004 laddr=127.0.0.2:7000 fd=11 name=myapp age=0\n";
    // Our own connection (id 9) is not a rival; the unnamed and other names are not claims.
    assert_eq!(
        rivals(list, "9"),
        vec![Rival {
            name: "slotproxy-claim:create:127.0.0.1:7001:pid9:job1".into(),
            id: "7".into(),
            addr: "127.0.0.1:5002".into(),
        }]
    );
    assert!(rivals(list, "7").iter().any(|r| r.id == "9"));
    assert!(rivals("", "1").is_empty());
}

#[test]
fn rivals_read_a_hostile_client_list_without_trusting_its_shape() {
    // A reply is input: lines without fields, fields without values, a claim with no ID or
    // address, binary noise and a huge line must neither panic nor hide a claim.
    let huge = format!("id=5 name=x{}", "y".repeat(100_000));
    let list = format!(
        "\n=\nid name= addr\n\u{0}\u{7f}garbage\r\n{huge}\nname=slotproxy-claim:create:h:1:pid2:job3\n"
    );
    let r = rivals(&list, "9");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].name, "slotproxy-claim:create:h:1:pid2:job3");
    assert_eq!((r[0].id.as_str(), r[0].addr.as_str()), ("", ""));
    // The refusal's text quotes these fields; errors are made safe for RESP by `resp::error`.
    let e = crate::route::resp::error("ERR claimed by x\r\ny");
    assert!(!e[..e.len() - 2].contains(&b'\n'), "{e:?}");
}
