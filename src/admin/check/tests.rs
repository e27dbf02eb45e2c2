//! CHECK's unit tests: arguments, and every rule from hand-built surveys.

use super::rules::{islands, Topo};
use super::*;
use crate::admin::json_str;
use crate::admin::survey::NodeState;
use crate::cluster::{parse_cluster_nodes, NodeLine};
use std::collections::BTreeMap;

#[test]
fn check_arguments() {
    let a = |w: &[&str]| -> Vec<bytes::Bytes> {
        w.iter()
            .map(|x| bytes::Bytes::copy_from_slice(x.as_bytes()))
            .collect()
    };
    let (json, hosts) =
        super::parse_args(&a(&["host", "10.0.0.1:7000", "rack1", "JSON"])).expect("valid");
    assert!(json);
    assert_eq!(hosts.host_of("10.0.0.1:7000"), "rack1");
    assert_eq!(hosts.host_of("10.0.0.1:7001"), "10.0.0.1");
    assert!(super::parse_args(&a(&["HOST", "10.0.0.1:7000"])).is_err());
    assert!(super::parse_args(&a(&["HOST", "10.0.0.1", "x"])).is_err());
    assert!(super::parse_args(&a(&["NOPE"])).is_err());
}

/// IDs `aaaa...1`, `aaaa...2`, ... for node `i`.
fn id(i: usize) -> String {
    format!("{:0>40}", i)
}

/// A node line for `parse_cluster_nodes`.
struct L {
    i: usize,
    ip: &'static str,
    port: u16,
    flags: &'static str,
    master: Option<usize>,
    epoch: u64,
    slots: &'static str,
}

fn line(l: &L, myself: bool) -> String {
    format!(
        "{} {}:{}@{} {}{} {} 0 0 {} connected {}",
        id(l.i),
        l.ip,
        l.port,
        l.port + 10000,
        if myself { "myself," } else { "" },
        l.flags,
        l.master.map_or("-".to_string(), id),
        l.epoch,
        l.slots
    )
}

/// A healthy 3 masters + 3 replicas cluster over hosts .2 .3 .4, replicas crosswise.
fn layout() -> Vec<L> {
    vec![
        L {
            i: 1,
            ip: "127.0.0.2",
            port: 7000,
            flags: "master",
            master: None,
            epoch: 1,
            slots: "0-5460",
        },
        L {
            i: 2,
            ip: "127.0.0.3",
            port: 7000,
            flags: "master",
            master: None,
            epoch: 2,
            slots: "5461-10922",
        },
        L {
            i: 3,
            ip: "127.0.0.4",
            port: 7000,
            flags: "master",
            master: None,
            epoch: 3,
            slots: "10923-16383",
        },
        L {
            i: 4,
            ip: "127.0.0.3",
            port: 7001,
            flags: "slave",
            master: Some(1),
            epoch: 1,
            slots: "",
        },
        L {
            i: 5,
            ip: "127.0.0.4",
            port: 7001,
            flags: "slave",
            master: Some(2),
            epoch: 2,
            slots: "",
        },
        L {
            i: 6,
            ip: "127.0.0.2",
            port: 7001,
            flags: "slave",
            master: Some(3),
            epoch: 3,
            slots: "",
        },
    ]
}

/// A survey in which every node sees `lines` (its own line marked myself).
fn survey_of(lines: &[L]) -> Survey {
    let mut nodes = Vec::new();
    for me in lines {
        let text: String = lines.iter().map(|l| line(l, l.i == me.i) + "\n").collect();
        let view = parse_cluster_nodes(&text, me.ip).expect("parse");
        let mut replication = BTreeMap::new();
        if me.master.is_some() {
            replication.insert("role".into(), "slave".into());
            replication.insert("master_link_status".into(), "up".into());
            replication.insert("slave_repl_offset".into(), "100".into());
            replication.insert("master_last_io_seconds_ago".into(), "1".into());
        } else {
            replication.insert("role".into(), "master".into());
            replication.insert("master_repl_offset".into(), "100".into());
        }
        nodes.push(NodeState {
            addr: format!("{}:{}", me.ip, me.port),
            error: None,
            cluster_enabled: true,
            view,
            cluster_info: [("cluster_state".to_string(), "ok".to_string())].into(),
            replication,
            dbsize: 0,
            config: [("cluster-node-timeout".to_string(), "1000".to_string())].into(),
        });
    }
    Survey { nodes }
}

fn codes(f: &[Finding]) -> Vec<&'static str> {
    let mut c: Vec<&'static str> = f.iter().map(|x| x.code).collect();
    c.dedup();
    c
}

fn run(s: &Survey) -> Vec<Finding> {
    findings(s, &HostLabels::default())
}

fn set_view(s: &mut Survey, node: usize, edit: impl Fn(&mut Vec<NodeLine>)) {
    edit(&mut s.nodes[node].view);
}

#[test]
fn healthy_cluster_is_ok() {
    let s = survey_of(&layout());
    let f = run(&s);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(verdict(&f), "OK");
    assert_eq!(report_lines(&s, &f)[0], "OK");
}

#[test]
fn unreachable_and_flags() {
    let mut s = survey_of(&layout());
    s.nodes[2] = NodeState::unreachable("127.0.0.4:7000", "no reply within 1s");
    for n in 0..s.nodes.len() {
        set_view(&mut s, n, |v| {
            for l in v.iter_mut().filter(|l| l.id == id(3)) {
                l.flags = vec!["master".into(), "fail?".into()];
            }
        });
    }
    let f = run(&s);
    let c = codes(&f);
    assert!(c.contains(&"unreachable"), "{f:?}");
    let flags = f.iter().find(|x| x.code == "flags").expect("flags finding");
    assert_eq!(flags.severity, Severity::Warn);
    assert!(flags.message.contains("127.0.0.4:7000 is flagged fail?"));
    // Its slots are still covered (others vouch for the unreachable owner).
    assert!(!c.contains(&"uncovered"));
    s.nodes[0].view[2].flags = vec!["master".into(), "fail".into()];
    let f = run(&s);
    assert!(f
        .iter()
        .any(|x| x.code == "flags" && x.severity == Severity::Error));
    s.nodes[0].view.push(
        parse_cluster_nodes(
            "ffffffffffffffffffffffffffffffffffffffff 127.0.0.9:7000@17000 handshake - 0 0 0 connected",
            "",
        )
        .expect("line")
        .remove(0),
    );
    let f = run(&s);
    assert!(f
        .iter()
        .any(|x| x.code == "flags" && x.message.contains("127.0.0.9:7000 is flagged handshake")));
    // A handshake entry is not a member; nobody is "missing" it.
    assert!(!codes(&f).contains(&"membership"), "{f:?}");
}

#[test]
fn membership_after_forget() {
    let mut s = survey_of(&layout());
    set_view(&mut s, 0, |v| v.retain(|l| l.id != id(5)));
    let f = run(&s);
    let m: Vec<&Finding> = f.iter().filter(|x| x.code == "membership").collect();
    assert_eq!(m.len(), 1, "{f:?}");
    assert_eq!(m[0].nodes, vec!["127.0.0.4:7001", "127.0.0.2:7000"]);
    assert!(m[0].message.contains("is unknown to 127.0.0.2:7000"));
}

#[test]
fn role_disagreement() {
    let mut s = survey_of(&layout());
    // Node 4 says it is a master now; the others still see a replica.
    set_view(&mut s, 3, |v| {
        for l in v.iter_mut().filter(|l| l.id == id(4)) {
            l.flags = vec!["myself".into(), "master".into()];
            l.master_id = None;
        }
    });
    let f = run(&s);
    let r: Vec<&Finding> = f.iter().filter(|x| x.code == "role").collect();
    assert_eq!(r.len(), 1, "{f:?}");
    assert!(r[0].message.contains("127.0.0.3:7001 says it is master"));
    assert!(r[0].message.contains("replica of 127.0.0.2:7000"));
}

#[test]
fn delslots_is_uncovered_and_differs() {
    let mut s = survey_of(&layout());
    // The owner deleted slots 0-99 from itself; others still remember it as owner.
    set_view(&mut s, 0, |v| {
        for l in v.iter_mut().filter(|l| l.id == id(1)) {
            l.slots = vec![(100, 5460)];
        }
    });
    s.nodes[0]
        .cluster_info
        .insert("cluster_state".into(), "fail".into());
    let f = run(&s);
    let u = f.iter().find(|x| x.code == "uncovered").expect("uncovered");
    assert!(
        u.message
            .contains("100 slot(s) have no master: 0-99; hint: PROXY FIX"),
        "{u:?}"
    );
    let d = f
        .iter()
        .find(|x| x.code == "slot-map-differs")
        .expect("differs");
    assert!(d.message.starts_with("127.0.0.2:7000 disagrees"));
    assert!(d
        .message
        .contains("slots 0-99 owned by nobody (others: 127.0.0.2:7000)"));
    assert!(codes(&f).contains(&"state-not-ok"));
}

#[test]
fn conflicting_claims() {
    let mut s = survey_of(&layout());
    set_view(&mut s, 1, |v| {
        for l in v.iter_mut().filter(|l| l.id == id(2)) {
            l.slots = vec![(0, 10), (5461, 10922)];
        }
    });
    let f = run(&s);
    assert!(f.iter().any(|x| x.code == "slot-map-differs"
        && x.message
            .contains("slots 0-10 are claimed by several masters")));
}

#[test]
fn open_slots() {
    let mut s = survey_of(&layout());
    s.nodes[0].view[0].migrating.push((42, id(2)));
    s.nodes[1].view[1].importing.push((42, id(1)));
    let f = run(&s);
    let o: Vec<&Finding> = f.iter().filter(|x| x.code == "open-slot").collect();
    assert_eq!(o.len(), 2);
    assert!(o[0]
        .message
        .contains("127.0.0.2:7000 has slot 42 open: migrating to 127.0.0.3:7000; hint: PROXY FIX"));
    assert!(o[1]
        .message
        .contains("importing from 127.0.0.2:7000; hint: PROXY FIX"));
}

#[test]
fn duplicate_epochs() {
    let mut l = layout();
    l[2].epoch = 2;
    let f = run(&survey_of(&l));
    let e = f
        .iter()
        .find(|x| x.code == "epoch-duplicate")
        .expect("epoch-duplicate");
    assert_eq!(e.nodes, vec!["127.0.0.3:7000", "127.0.0.4:7000"]);
}

#[test]
fn replication_link_and_lag() {
    let mut s = survey_of(&layout());
    s.nodes[3]
        .replication
        .insert("master_link_status".into(), "down".into());
    s.nodes[4]
        .replication
        .insert("slave_repl_offset".into(), "0".into());
    s.nodes[1].replication.insert(
        "master_repl_offset".into(),
        (LAG_BYTES + 10_000).to_string(),
    );
    let f = run(&s);
    let d = f
        .iter()
        .find(|x| x.code == "replica-link-down")
        .expect("link down");
    assert_eq!(d.nodes, vec!["127.0.0.3:7001", "127.0.0.2:7000"]);
    let l = f.iter().find(|x| x.code == "replica-lag").expect("lag");
    assert_eq!(l.severity, Severity::Warn);
    assert!(l
        .message
        .starts_with("127.0.0.4:7001 lags behind 127.0.0.3:7000"));
}

#[test]
fn master_without_replicas_and_missing_master() {
    // Replica 6 is gone from the cluster entirely.
    let mut l = layout();
    l.pop();
    let f = run(&survey_of(&l));
    let m = f
        .iter()
        .find(|x| x.code == "master-without-replicas")
        .expect("master-without-replicas");
    assert_eq!(m.nodes, vec!["127.0.0.4:7000"]);

    // Master 1 never started: everyone has its rendered line, its replica never synced.
    let mut s = survey_of(&layout());
    s.nodes[0] = NodeState::unreachable("127.0.0.2:7000", "connection refused");
    s.nodes[3]
        .replication
        .insert("master_link_status".into(), "down".into());
    s.nodes[3]
        .replication
        .insert("master_link_down_since_seconds".into(), "-1".into());
    let f = run(&s);
    let m = f
        .iter()
        .find(|x| x.code == "master-missing")
        .expect("master-missing");
    assert_eq!(m.nodes, vec!["127.0.0.3:7001", "127.0.0.2:7000"]);
    assert!(m.message.contains("never synced"));
    assert!(!codes(&f).contains(&"replica-link-down"));
}

#[test]
fn placement_findings() {
    // Replica 5 re-pointed to master 2's... no: to master 3, which is on its own host .4.
    let mut l = layout();
    l[4].master = Some(3);
    let f = run(&survey_of(&l));
    let c = f
        .iter()
        .find(|x| x.code == "colocated-replica")
        .expect("colocated");
    assert_eq!(c.nodes, vec!["127.0.0.4:7001", "127.0.0.4:7000"]);
    assert!(codes(&f).contains(&"master-without-replicas"));

    // Two of three masters on one host: host-majority, and uneven inside the island.
    let mut l = layout();
    l[1].ip = "127.0.0.2";
    l[1].port = 7002;
    l[3].ip = "127.0.0.3";
    let f = run(&survey_of(&l));
    let h = f
        .iter()
        .find(|x| x.code == "host-majority")
        .expect("host-majority");
    assert!(h.message.contains("host 127.0.0.2 holds 2 of 3 masters"));
    let u = f
        .iter()
        .find(|x| x.code == "uneven-masters")
        .expect("uneven");
    assert!(u.message.contains("127.0.0.2=2"));
    assert!(u.message.contains("127.0.0.3=0"));
    assert!(u.message.contains("PROXY REBALANCE MASTERS"));
}

#[test]
fn islands_follow_replica_links() {
    let s = survey_of(&layout());
    let topo = Topo::build(&s);
    let isl = islands(&topo, &HostLabels::default());
    assert_eq!(isl.len(), 1);
    assert_eq!(isl[0].len(), 3);
    // Host labels merge addresses into one host.
    let labels = HostLabels {
        labels: [
            ("127.0.0.3:7000".to_string(), "127.0.0.2".to_string()),
            ("127.0.0.3:7001".to_string(), "127.0.0.2".to_string()),
        ]
        .into(),
    };
    let isl = islands(&topo, &labels);
    assert_eq!(
        isl,
        vec![vec!["127.0.0.2".to_string(), "127.0.0.4".to_string()]]
    );
}

#[test]
fn settings_and_cluster_disabled() {
    let mut s = survey_of(&layout());
    s.nodes[5]
        .config
        .insert("cluster-node-timeout".into(), "5000".into());
    s.nodes.push(NodeState {
        addr: "127.0.0.9:6379".into(),
        ..Default::default()
    });
    let f = run(&s);
    let d = f
        .iter()
        .find(|x| x.code == "settings-differ")
        .expect("settings");
    assert!(d.message.contains("\"5000\" on 127.0.0.2:7001"));
    assert!(codes(&f).contains(&"cluster-disabled"));
}

#[test]
fn node_timeout_left_lowered_by_create_is_pointed_out() {
    let lowered = |value: &str| {
        let mut s = survey_of(&layout());
        s.nodes[5]
            .config
            .insert("cluster-node-timeout".into(), value.into());
        run(&s)
            .into_iter()
            .find(|x| x.code == "settings-differ")
            .expect("settings")
            .message
    };
    let m = lowered("500");
    assert!(
        m.contains("500 on 127.0.0.2:7001 may be left by a PROXY CREATE")
            && m.contains("CONFIG SET cluster-node-timeout <ms>"),
        "{m}"
    );
    // Any other difference is only reported.
    assert!(!lowered("5000").contains("PROXY CREATE"));
}

#[test]
fn json_and_text_forms() {
    let mut s = survey_of(&layout());
    s.nodes[2] = NodeState::unreachable("127.0.0.4:7000", "said \"no\"\n");
    let f = run(&s);
    let j = report_json(&s, &f);
    assert!(j.starts_with("{\"verdict\":\"ERRORS "));
    assert!(j.contains("\\\"no\\\"\\n"));
    assert!(j.contains("\"code\":\"unreachable\""));
    let lines = report_lines(&s, &f);
    assert!(lines[0].starts_with("ERRORS "));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("ERROR unreachable 127.0.0.4:7000")));
    assert_eq!(json_str("a\u{1}"), "\"a\\u0001\"");
    assert_eq!(ranges_text(&[1, 2, 3, 7, 9, 10]), "1-3,7,9-10");
}

#[test]
fn empty_masters_and_outsiders_are_warnings() {
    // A shard just added: a master without slots and its replica, on two new hosts.
    let mut lines = layout();
    lines.push(L {
        i: 7,
        ip: "127.0.0.5",
        port: 7000,
        flags: "master",
        master: None,
        epoch: 7,
        slots: "",
    });
    lines.push(L {
        i: 8,
        ip: "127.0.0.6",
        port: 7000,
        flags: "slave",
        master: Some(7),
        epoch: 7,
        slots: "",
    });
    let mut s = survey_of(&lines);
    let f = run(&s);
    assert_eq!(codes(&f), vec!["empty-master"], "{f:?}");
    assert_eq!(f[0].severity, Severity::Warn);
    assert_eq!(f[0].nodes, vec!["127.0.0.5:7000"]);
    assert_eq!(verdict(&f), "ERRORS 0 WARNINGS 1");

    // A node that answers but knows nobody (a seed never added, or a removed node after its
    // reset) is an outsider, not a membership problem of the others.
    let alone = survey_of(&[L {
        i: 9,
        ip: "127.0.0.9",
        port: 7000,
        flags: "master",
        master: None,
        epoch: 0,
        slots: "",
    }]);
    s.nodes.extend(alone.nodes.clone());
    let f = run(&s);
    assert_eq!(codes(&f), vec!["empty-master", "outsider"], "{f:?}");
    let o = f.iter().find(|x| x.code == "outsider").expect("outsider");
    assert_eq!(o.nodes, vec!["127.0.0.9:7000"]);
    assert_eq!(o.severity, Severity::Warn);
    // Once a member knows it, it is judged as a member again.
    let nine = alone.nodes[0].view[0].clone();
    s.nodes[0].view.push(NodeLine {
        flags: vec!["master".into()],
        ..nine
    });
    assert!(codes(&run(&s)).contains(&"membership"));
    // Nodes that are all alone (before CREATE) are no outsiders and no empty masters.
    let mut fresh = alone.clone();
    fresh.nodes.push(
        survey_of(&[L {
            i: 10,
            ip: "127.0.0.10",
            port: 7000,
            flags: "master",
            master: None,
            epoch: 0,
            slots: "",
        }])
        .nodes
        .remove(0),
    );
    let c = codes(&run(&fresh));
    assert!(
        !c.contains(&"outsider") && !c.contains(&"empty-master"),
        "{c:?}"
    );
}
