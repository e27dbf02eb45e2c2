//! Unit tests of ADD's and REMOVE's decisions, from hand-built surveys, and of their
//! arguments.

use super::*;
use crate::admin::placement::NodeSpec;
use crate::admin::survey::NodeState;
use crate::cluster::parse_cluster_nodes;

fn id(i: usize) -> String {
    format!("{i:0>40}")
}

/// One node: its ID number, address, master's number (replica) and slots.
#[derive(Clone)]
struct N {
    i: usize,
    addr: &'static str,
    master: Option<usize>,
    slots: &'static str,
}

const fn n(i: usize, addr: &'static str, master: Option<usize>, slots: &'static str) -> N {
    N {
        i,
        addr,
        master,
        slots,
    }
}

fn line(x: &N, myself: bool) -> String {
    let (ip, port) = x.addr.rsplit_once(':').expect("addr");
    let port: u16 = port.parse().expect("port");
    format!(
        "{} {ip}:{port}@{} {}{} {} 0 0 {} connected {}\n",
        id(x.i),
        port + 10000,
        if myself { "myself," } else { "" },
        if x.master.is_some() {
            "slave"
        } else {
            "master"
        },
        x.master.map_or("-".to_string(), id),
        x.i,
        x.slots
    )
}

/// A node that sees `known` (its own line marked myself).
fn state(me: &N, known: &[N], dbsize: u64) -> NodeState {
    let mut text = line(me, true);
    for k in known.iter().filter(|k| k.i != me.i) {
        text.push_str(&line(k, false));
    }
    let (ip, _) = me.addr.rsplit_once(':').expect("addr");
    NodeState {
        addr: me.addr.to_string(),
        error: None,
        cluster_enabled: true,
        view: parse_cluster_nodes(&text, ip).expect("parse"),
        cluster_info: [("cluster_state".to_string(), "ok".to_string())].into(),
        replication: Default::default(),
        dbsize,
        config: Default::default(),
    }
}

/// A 3x1 cluster on hosts .1 .2 .3, replicas crosswise.
fn base() -> Vec<N> {
    vec![
        n(1, "127.0.0.1:7000", None, "0-5460"),
        n(2, "127.0.0.2:7000", None, "5461-10922"),
        n(3, "127.0.0.3:7000", None, "10923-16383"),
        n(4, "127.0.0.2:7001", Some(1), ""),
        n(5, "127.0.0.3:7001", Some(2), ""),
        n(6, "127.0.0.1:7001", Some(3), ""),
    ]
}

/// Every member sees every member; `alone` nodes see only themselves.
fn survey(members: &[N], alone: &[N]) -> Survey {
    let mut nodes: Vec<NodeState> = members.iter().map(|m| state(m, members, 0)).collect();
    nodes.extend(alone.iter().map(|a| state(a, &[], 0)));
    Survey { nodes }
}

/// Four new nodes on hosts .4 and .5.
fn new_four() -> Vec<N> {
    vec![
        n(11, "127.0.0.4:7000", None, ""),
        n(12, "127.0.0.4:7001", None, ""),
        n(13, "127.0.0.5:7000", None, ""),
        n(14, "127.0.0.5:7001", None, ""),
    ]
}

fn specs(nodes: &[N]) -> Vec<NodeSpec> {
    nodes
        .iter()
        .map(|x| {
            let (ip, port) = x.addr.rsplit_once(':').expect("addr");
            NodeSpec::new(ip, port.parse().expect("port"))
        })
        .collect()
}

fn lines(w: &Work) -> String {
    let mut all = w.lines.clone();
    all.extend(w.steps.iter().map(Step::line));
    all.join("\n")
}

fn ip(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |x| x.0)
}

#[test]
fn two_new_shards_then_resume_then_nothing() {
    let fresh = new_four();
    let s = survey(&base(), &fresh);
    let w = decide_add(&Shape::Shards(1), &specs(&fresh), &s).expect("plan");
    let meets = w
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Meet { ip, port: 7000, .. } if ip == "127.0.0.1"))
        .count();
    assert_eq!(meets, 4, "{}", lines(&w));
    let reps: Vec<(&String, &String)> = w
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Replicate { node, master, .. } => Some((node, master)),
            _ => None,
        })
        .collect();
    assert_eq!(reps.len(), 2, "{}", lines(&w));
    for (node, master) in &reps {
        assert_ne!(ip(node), ip(master), "replica on its master's host");
    }
    assert!(
        w.lines.iter().any(|l| l
            == "masters per host after: 127.0.0.1=1 127.0.0.2=1 127.0.0.3=1 127.0.0.4=1 \
                127.0.0.5=1"),
        "{}",
        lines(&w)
    );
    assert_eq!(w.summary, "2 master(s), 2 replica(s)");
    assert_eq!(w.cluster.len(), 10);
    assert!(matches!(w.steps.last(), Some(Step::WaitLinks)));

    // Killed after MEET: the new nodes are members (empty masters); the same plan remains,
    // minus the MEETs.
    let mut all = base();
    all.extend(fresh.clone());
    let s = survey(&all, &[]);
    let again = decide_add(&Shape::Shards(1), &specs(&fresh), &s).expect("resume");
    assert!(!again.steps.iter().any(|s| matches!(s, Step::Meet { .. })));
    let reps_again: Vec<Step> = again
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Replicate { .. }))
        .cloned()
        .collect();
    let reps_first: Vec<Step> = w
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Replicate { .. }))
        .cloned()
        .collect();
    assert_eq!(reps_again, reps_first);

    // Done: the replicas follow their masters. Nothing changes any more.
    let mut done = base();
    for x in &fresh {
        let mut x = x.clone();
        if let Some(Step::Replicate { master_id, .. }) = reps_first
            .iter()
            .find(|s| matches!(s, Step::Replicate { node, .. } if node == x.addr))
        {
            x.master = Some(master_id.parse().expect("numeric id"));
        }
        done.push(x);
    }
    let s = survey(&done, &[]);
    let w = decide_add(&Shape::Shards(1), &specs(&fresh), &s).expect("done");
    assert!(!w.changes_anything(), "{}", lines(&w));

    // A failover inside a new shard since: still nothing to do, and a note says why.
    let (a, b) = match &reps_first[0] {
        Step::Replicate {
            node, master_id, ..
        } => (
            done.iter().position(|x| x.addr == node).expect("replica"),
            done.iter()
                .position(|x| id(x.i) == *master_id)
                .expect("master"),
        ),
        _ => unreachable!(),
    };
    let (ia, ib) = (done[a].i, done[b].i);
    done[a].master = None;
    done[b].master = Some(ia);
    let s = survey(&done, &[]);
    let w = decide_add(&Shape::Shards(1), &specs(&fresh), &s).expect("swapped");
    assert!(!w.changes_anything());
    assert!(
        w.lines[0].contains("members already, in other roles"),
        "{}",
        lines(&w)
    );
    let _ = ib;
}

#[test]
fn add_refusals_name_the_node() {
    let fresh = new_four();
    let spec = specs(&fresh);
    let refused = |s: &Survey, shape: &Shape, nodes: &[NodeSpec]| {
        decide_add(shape, nodes, s)
            .expect_err("refused")
            .to_string()
    };
    // Keys.
    let mut s = survey(&base(), &fresh);
    s.nodes[7].dbsize = 3;
    let e = refused(&s, &Shape::Shards(1), &spec);
    assert!(e.contains("node 127.0.0.4:7001 holds 3 key(s)"), "{e}");
    // Another cluster.
    let mut s = survey(&base(), &fresh);
    s.nodes[6] = state(&fresh[0], &[n(99, "10.9.9.9:7000", None, "0-16383")], 0);
    let e = refused(&s, &Shape::Shards(1), &spec);
    assert!(
        e.contains("node 127.0.0.4:7000 belongs to another cluster: it knows node 10.9.9.9:7000"),
        "{e}"
    );
    // Unreachable new node, and a member that is down.
    let mut s = survey(&base(), &fresh);
    s.nodes[8] = NodeState::unreachable("127.0.0.5:7000", "connection refused");
    let e = refused(&s, &Shape::Shards(1), &spec);
    assert!(
        e.contains("node 127.0.0.5:7000 is unreachable: connection refused"),
        "{e}"
    );
    let mut s = survey(&base(), &fresh);
    s.nodes[4] = NodeState::unreachable("127.0.0.3:7001", "timeout");
    let e = refused(&s, &Shape::Shards(1), &spec);
    assert!(
        e.contains("node 127.0.0.3:7001 of the cluster does not answer"),
        "{e}"
    );
    // An original master listed with new nodes.
    let s = survey(&base(), &fresh[..1]);
    let nodes = specs(&[base()[0].clone(), fresh[0].clone()]);
    let e = refused(&s, &Shape::Shards(1), &nodes);
    assert!(
        e.contains("node 127.0.0.1:7000 is already a member of the cluster (a master owning 5461"),
        "{e}"
    );
    // Not divisible, one host for a whole shard.
    let s = survey(&base(), &fresh);
    let e = refused(&s, &Shape::Shards(1), &spec[..3]);
    assert!(e.contains("not divisible"), "{e}");
    let e = refused(&s, &Shape::Shards(1), &spec[..2]);
    assert!(e.contains("not enough distinct hosts"), "{e}");
    // No cluster at all.
    let s = survey(&[], &fresh);
    assert_eq!(
        decide_add(&Shape::Shards(1), &spec, &s),
        Err(Refusal::NoCluster)
    );
}

#[test]
fn replicas_of_a_named_master_and_of_any() {
    let fresh = new_four();
    let s = survey(&base(), &fresh);
    let named = |x: &str| Shape::ReplicasOf(MasterName::Node(x.to_string()));
    let w = decide_add(&named("127.0.0.1:7000"), &specs(&fresh[..1]), &s).expect("plan");
    let text = lines(&w);
    assert!(text.contains("new replica 127.0.0.4:7000 (host 127.0.0.4) of master 127.0.0.1:7000"));
    assert!(
        text.contains("master 127.0.0.1:7000 will have 2 replica(s)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "step CLUSTER REPLICATE {} (127.0.0.1:7000) on 127.0.0.4:7000",
            id(1)
        )),
        "{text}"
    );
    // By ID too.
    assert!(decide_add(&named(&id(1)), &specs(&fresh[..1]), &s).is_ok());
    // Refusals: a replica, an unknown node, a node on the master's host.
    let e = decide_add(&named("127.0.0.2:7001"), &specs(&fresh[..1]), &s).expect_err("replica");
    assert!(
        e.to_string()
            .contains("node 127.0.0.2:7001 is a replica (of 127.0.0.1:7000)"),
        "{e}"
    );
    let e = decide_add(&named("127.0.0.9:1"), &specs(&fresh[..1]), &s).expect_err("unknown");
    assert!(e
        .to_string()
        .contains("no member of the cluster is 127.0.0.9:1"));
    let same = [n(21, "127.0.0.1:7005", None, "")];
    let s2 = survey(&base(), &same);
    let e = decide_add(&named("127.0.0.1:7000"), &specs(&same), &s2).expect_err("host");
    assert!(
        e.to_string()
            .contains("node 127.0.0.1:7005 is on host 127.0.0.1 like its master 127.0.0.1:7000"),
        "{e}"
    );

    // ANY: the master on .3 has lost its replica; a new node on .3 cannot serve it, one on .4
    // can, so .4 goes to .3's master and .3 to one of the others.
    let mut members = base();
    members.retain(|x| x.i != 6);
    let new = [
        n(31, "127.0.0.3:7005", None, ""),
        n(32, "127.0.0.4:7005", None, ""),
    ];
    let s = survey(&members, &new);
    let w = decide_add(&Shape::ReplicasOf(MasterName::Any), &specs(&new), &s).expect("any");
    let text = lines(&w);
    assert!(
        text.contains("new replica 127.0.0.4:7005 (host 127.0.0.4) of master 127.0.0.3:7000"),
        "{text}"
    );
    assert!(
        !text.contains("127.0.0.3:7005 (host 127.0.0.3) of master 127.0.0.3"),
        "{text}"
    );
    assert_eq!(w.summary, "2 replica(s)");
    // Re-run once one of them follows its master: that one stays, the other is placed again
    // the same way.
    let mut joined = members.clone();
    joined.push(n(32, "127.0.0.4:7005", Some(3), ""));
    joined.push(n(31, "127.0.0.3:7005", None, ""));
    let s = survey(&joined, &[]);
    let again = decide_add(&Shape::ReplicasOf(MasterName::Any), &specs(&new), &s).expect("again");
    let reps: Vec<&Step> = again
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Replicate { .. }))
        .collect();
    assert_eq!(reps.len(), 1, "{}", lines(&again));
    assert!(reps[0].line().ends_with("on 127.0.0.3:7005"));
}

#[test]
fn single_host_clusters_colocate_with_a_warning() {
    let members = vec![
        n(1, "127.0.0.1:7000", None, "0-5460"),
        n(2, "127.0.0.1:7001", None, "5461-10922"),
        n(3, "127.0.0.1:7002", None, "10923-16383"),
    ];
    let new = [n(11, "127.0.0.1:7010", None, "")];
    let s = survey(&members, &new);
    let w = decide_add(
        &Shape::ReplicasOf(MasterName::Node("127.0.0.1:7000".into())),
        &specs(&new),
        &s,
    )
    .expect("colocated");
    assert!(lines(&w).contains("warning 127.0.0.1:7010 shares host 127.0.0.1"));
}

#[test]
fn remove_decisions() {
    let mut members = base();
    // A second replica for the master on .1, and a new empty shard on .4/.5.
    members.push(n(7, "127.0.0.3:7002", Some(1), ""));
    members.push(n(11, "127.0.0.4:7000", None, ""));
    members.push(n(12, "127.0.0.5:7000", Some(11), ""));
    let s = survey(&members, &[]);
    let names = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // A replica whose master keeps another one, and an empty master with its replica.
    let w = decide_remove(
        &names(&["127.0.0.3:7002", "127.0.0.4:7000", "127.0.0.5:7000"]),
        false,
        &s,
    )
    .expect("remove");
    assert_eq!(
        w.lines[0],
        "remove 127.0.0.3:7002 (replica of 127.0.0.1:7000)"
    );
    assert_eq!(
        w.lines[1],
        "remove 127.0.0.4:7000 (master owning 0 slot(s))"
    );
    assert!(matches!(&w.steps[0], Step::Forget { removed } if removed.len() == 3));
    assert_eq!(w.steps[1], Step::WaitForgotten);
    assert_eq!(w.steps.len(), 5);
    assert_eq!(w.cluster.len(), 6);
    assert_eq!(w.summary, "3 node(s)");

    // Refusals.
    let refused = |v: &[&str], force: bool| {
        decide_remove(&names(v), force, &s)
            .expect_err("refused")
            .to_string()
    };
    let e = refused(&["127.0.0.2:7000"], false);
    assert!(
        e.contains("master 127.0.0.2:7000 has replica(s) 127.0.0.3:7001 that are not listed"),
        "{e}"
    );
    // A master that owns slots, listed with its replica, is drained first.
    let w = decide_remove(&names(&["127.0.0.2:7000", "127.0.0.3:7001"]), false, &s).expect("drain");
    assert_eq!(
        w.lines[0],
        "remove 127.0.0.2:7000 (master owning 5462 slot(s))"
    );
    assert_eq!(
        w.steps[0],
        Step::Drain {
            node: "127.0.0.2:7000".into()
        }
    );
    assert!(matches!(&w.steps[1], Step::Forget { removed } if removed.len() == 2));
    let e = refused(&["127.0.0.4:7000"], false);
    assert!(
        e.contains("master 127.0.0.4:7000 has replica(s) 127.0.0.5:7000 that are not listed"),
        "{e}"
    );
    let e = refused(&["127.0.0.3:7001"], false);
    assert!(
        e.contains("node 127.0.0.3:7001 is the last replica of master 127.0.0.2:7000"),
        "{e}"
    );
    assert!(e.contains("add FORCE"), "{e}");
    // FORCE removes it, with a warning.
    let w = decide_remove(&names(&["127.0.0.3:7001"]), true, &s).expect("forced");
    assert!(lines(&w).contains("warning master 127.0.0.2:7000 keeps no replica (FORCE)"));
    // The last of two replicas listed together is refused too.
    let e = refused(&["127.0.0.2:7001", "127.0.0.3:7002"], false);
    assert!(e.contains("last replica of master 127.0.0.1:7000"), "{e}");
    // A node that stays but does not answer would bring the removed one back.
    let mut down = s.clone();
    down.nodes[2] = NodeState::unreachable("127.0.0.3:7000", "timeout");
    let e = decide_remove(&names(&["127.0.0.3:7002"]), false, &down)
        .expect_err("down")
        .to_string();
    assert!(
        e.contains("node 127.0.0.3:7000 of the cluster does not answer; it would not forget"),
        "{e}"
    );
    // A removed node that does not answer is forgotten, not reset.
    let mut gone = s.clone();
    gone.nodes[6] = NodeState::unreachable("127.0.0.3:7002", "refused");
    let w = decide_remove(&names(&["127.0.0.3:7002"]), false, &gone).expect("unreachable");
    assert!(!w.steps.iter().any(|s| matches!(s, Step::Reset { .. })));
    assert!(lines(&w).contains("cannot be reset"));
}

#[test]
fn remove_reruns_finish_or_do_nothing() {
    let mut members = base();
    members.push(n(7, "127.0.0.3:7002", Some(1), ""));
    let names = vec!["127.0.0.3:7002".to_string()];
    // Forgotten by everyone but not reset: it only gets its reset.
    let staying: Vec<N> = members.iter().filter(|x| x.i != 7).cloned().collect();
    let mut s = survey(&staying, &[]);
    s.nodes.push(state(&members[6], &members, 0));
    let w = decide_remove(&names, false, &s).expect("reset only");
    assert_eq!(
        w.steps,
        vec![Step::Reset {
            node: "127.0.0.3:7002".into()
        }]
    );
    // Reset: alone, nobody knows it: nothing to do.
    let s = survey(&staying, &[members[6].clone()]);
    let w = decide_remove(&names, false, &s).expect("nothing");
    assert!(!w.changes_anything());
    assert!(w.lines[0].contains("is no member of the cluster"));
    // Not surveyed at all (stopped since): nothing to do either.
    let s = survey(&staying, &[]);
    assert!(!decide_remove(&names, false, &s)
        .expect("nothing")
        .changes_anything());
    // A node of another cluster is not touched.
    let mut s = survey(&staying, &[]);
    s.nodes.push(state(
        &members[6],
        &[n(99, "10.9.9.9:7000", None, "0-16383")],
        0,
    ));
    let e = decide_remove(&names, false, &s).expect_err("foreign");
    assert!(e.to_string().contains("not touching it"), "{e}");
}

#[test]
fn remembered_names_who_still_lists_whom() {
    let members = base();
    let s = survey(&members, &[]);
    let removed = vec![(id(6), "127.0.0.1:7001".to_string())];
    let p = remembered(&s.nodes[..3], &removed);
    assert_eq!(p.len(), 3);
    assert_eq!(p[0], "127.0.0.1:7000 still lists 127.0.0.1:7001");
    let staying: Vec<N> = members.iter().filter(|x| x.i != 6).cloned().collect();
    let s = survey(&staying, &[]);
    assert!(remembered(&s.nodes, &removed).is_empty());
}

#[test]
fn arguments() {
    let a = |w: &str| -> Vec<bytes::Bytes> {
        w.split(' ')
            .map(|x| bytes::Bytes::copy_from_slice(x.as_bytes()))
            .collect()
    };
    let r = parse_add(&a(
        "REPLICAS 1 NODES 10.0.0.1:7000 HOST rack1 10.0.0.2:7000 DRYRUN ASYNC TIMEOUT 9",
    ))
    .expect("ok");
    assert_eq!(r.shape, Shape::Shards(1));
    assert_eq!(r.nodes.len(), 2);
    assert_eq!(r.nodes[0].host, "rack1");
    assert!(r.dryrun && r.detach);
    assert_eq!(r.wait, Some(std::time::Duration::from_secs(9)));
    let r = parse_add(&a("replicas-of any nodes 10.0.0.1:7000")).expect("ok");
    assert_eq!(r.shape, Shape::ReplicasOf(MasterName::Any));
    let err = |w: &str| parse_add(&a(w)).expect_err("bad").text(args::ADD_USAGE);
    assert!(err("NODES 10.0.0.1:7000").starts_with("give one of REPLICAS or REPLICAS-OF"));
    assert!(err("REPLICAS x NODES 10.0.0.1:7000").starts_with("REPLICAS needs a number"));
    assert!(err("REPLICAS 1 NODES nope").starts_with("bad node 'nope'"));
    assert!(err("REPLICAS 1 HOST a NODES 10.0.0.1:7000").starts_with("HOST must follow"));
    assert!(err("REPLICAS 1").starts_with("NODES and at least one node"));
    assert!(err("REPLICAS 1 REPLICAS-OF ANY NODES 10.0.0.1:7000").starts_with("give one of"));
    assert!(err("REPLICAS 1 NODES 10.0.0.1:7000 TIMEOUT 0").starts_with("TIMEOUT needs"));

    let r = parse_remove(&a(&format!(
        "NODES 10.0.0.1:7000 {} 10.0.0.1:7000 FORCE DRYRUN",
        "AB".repeat(20)
    )))
    .expect("ok");
    assert_eq!(r.names, vec!["10.0.0.1:7000".to_string(), "ab".repeat(20)]);
    assert!(r.force && r.dryrun && !r.detach);
    let err = |w: &str| {
        parse_remove(&a(w))
            .expect_err("bad")
            .text(args::REMOVE_USAGE)
    };
    assert!(err("10.0.0.1:7000").starts_with("NODES and at least one node"));
    assert!(err("NODES").starts_with("NODES and at least one node"));
    assert!(err("NODES 10.0.0.1:x").starts_with("bad node"));
    assert!(err("NODES 10.0.0.1:7000 NOW").starts_with("unexpected 'NOW'"));
}

#[test]
fn a_passing_doubt_is_no_failure() {
    let fresh = new_four();
    let flag = |s: &mut Survey, flag: &str| {
        for l in s.nodes[0].view.iter_mut().filter(|l| l.id == id(5)) {
            l.flags = vec!["slave".into(), flag.into()];
        }
    };
    let mut s = survey(&base(), &fresh);
    flag(&mut s, "fail?");
    assert!(decide_add(&Shape::Shards(1), &specs(&fresh), &s).is_ok());
    flag(&mut s, "fail");
    let e = decide_add(&Shape::Shards(1), &specs(&fresh), &s).expect_err("failing member");
    assert!(
        e.to_string()
            .contains("node 127.0.0.3:7001 of the cluster is flagged failing"),
        "{e}"
    );
}

#[test]
fn a_meet_is_sent_again_only_when_the_handshake_was_dropped() {
    let fresh = new_four();
    let s = survey(&base(), &fresh);
    let w = decide_add(&Shape::Shards(1), &specs(&fresh), &s).expect("plan");
    let meets: Vec<Step> = w
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Meet { .. }))
        .cloned()
        .collect();
    // Alone (the handshake was dropped): all four again.
    let again = meets_again(&s.nodes, &meets);
    assert_eq!(again.len(), 4);
    assert_eq!(again[0].0, "127.0.0.4:7000");
    assert_eq!(
        again[0].1,
        ["CLUSTER", "MEET", "127.0.0.1", "7000", "17000"].map(String::from)
    );
    // Shaking hands with the seed, or knowing it: not again.
    let mut s = s;
    let shaking = parse_cluster_nodes(
        "ffffffffffffffffffffffffffffffffffffffff 127.0.0.1:7000@17000 handshake - 0 0 0 connected\n",
        "",
    )
    .expect("line");
    s.nodes[6].view.extend(shaking);
    s.nodes[7] = state(&fresh[1], &base(), 0);
    let again = meets_again(&s.nodes, &meets);
    let who: Vec<&str> = again.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(who, vec!["127.0.0.5:7000", "127.0.0.5:7001"]);
}

#[test]
fn forget_waits_until_every_node_sees_the_drained_master_empty() {
    // Node 1 was drained: its slots went to node 2; the replica on .2 has not heard yet.
    let after = vec![
        n(1, "127.0.0.1:7000", None, ""),
        n(2, "127.0.0.2:7000", None, "0-10922"),
        n(3, "127.0.0.3:7000", None, "10923-16383"),
        n(5, "127.0.0.3:7001", Some(2), ""),
    ];
    let mut stale = after.clone();
    stale[0].slots = "0-5460";
    stale[1].slots = "5461-10922";
    let drained = vec!["127.0.0.1:7000".to_string()];
    let lagging = vec![
        state(&after[0], &after, 0),
        state(&after[1], &after, 0),
        state(&stale[3], &stale, 0),
    ];
    assert_eq!(
        drain_unseen(&lagging, &drained),
        vec!["127.0.0.3:7001 still sees 127.0.0.1:7000 owning slots".to_string()]
    );
    let settled: Vec<NodeState> = after.iter().map(|m| state(m, &after, 0)).collect();
    assert!(drain_unseen(&settled, &drained).is_empty());
}

#[test]
fn a_master_an_interrupted_remove_drained_is_no_last_replica() {
    // Node 1 gave its last slot to node 2 and Redis made it node 2's (only) replica.
    let members = vec![
        n(1, "127.0.0.1:7000", Some(2), ""),
        n(2, "127.0.0.2:7000", None, "0-10922"),
        n(3, "127.0.0.3:7000", None, "10923-16383"),
    ];
    let s = survey(&members, &[]);
    let names = vec!["127.0.0.1:7000".to_string()];
    let e = decide_remove(&names, false, &s).expect_err("last replica");
    assert!(e.to_string().contains("is the last replica"), "{e}");
    // The remove note names it: it is removed without FORCE.
    let w = decide_remove_after(&names, false, &s, &[id(1)]).expect("remove");
    assert!(
        w.lines
            .iter()
            .any(|l| l.starts_with("note 127.0.0.1:7000 is a replica only")),
        "{:?}",
        w.lines
    );
    assert!(matches!(&w.steps[0], Step::Forget { removed } if removed.len() == 1));
    // Another node's ID in the note changes nothing.
    assert!(decide_remove_after(&names, false, &s, &[id(3)]).is_err());
}
