//! Unit tests of the resize planner and option parser.

use super::*;
use std::collections::BTreeMap;

fn args(s: &str) -> Vec<Bytes> {
    s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
}

#[test]
fn memory_values_read_like_redis_conf() {
    assert_eq!(parse_memory("0"), Some(0));
    assert_eq!(parse_memory("1234"), Some(1234));
    assert_eq!(parse_memory("12b"), Some(12));
    assert_eq!(parse_memory("1k"), Some(1000));
    assert_eq!(parse_memory("1KB"), Some(1024));
    assert_eq!(parse_memory("2m"), Some(2_000_000));
    assert_eq!(parse_memory("512mb"), Some(512 << 20));
    assert_eq!(parse_memory("3G"), Some(3_000_000_000));
    assert_eq!(parse_memory("2gb"), Some(2 << 30));
    assert_eq!(parse_memory("007Mb"), Some(7 << 20));
    for bad in [
        "",
        "mb",
        "-1",
        "+1",
        "1.5gb",
        "1 gb",
        "1tb",
        "1x",
        "gb1",
        "1gbb",
        "12345678901234567890123",
        "17179869184gb",
    ] {
        assert_eq!(parse_memory(bad), None, "{bad}");
    }
}

#[test]
fn human_sizes() {
    assert_eq!(human(0), "0B");
    assert_eq!(human(1023), "1023B");
    assert_eq!(human(1536), "1.50K");
    assert_eq!(human(100 << 20), "100.00M");
    assert_eq!(human(2 << 30), "2.00G");
}

#[test]
fn options_parse() {
    let o = Options::parse(&args("maxmemory 2gb")).expect("ok");
    assert_eq!(o.target, Target::Bytes(2 << 30));
    assert!(!o.force && !o.dry_run && !o.detach);
    assert_eq!(o.timeout, DEFAULT_TIMEOUT);
    let o = Options::parse(&args("MAXMEMORY 50% force DRYRUN async TIMEOUT 9")).expect("ok");
    assert_eq!(o.target, Target::Percent(50));
    assert!(o.force && o.dry_run && o.detach);
    assert_eq!(o.timeout, Duration::from_secs(9));
    assert_eq!(Options::parse(&args("MAXMEMORY")), Err(ArgError::Usage));
    assert_eq!(Options::parse(&args("MINMEMORY 1")), Err(ArgError::Usage));
    assert_eq!(
        Options::parse(&args("MAXMEMORY 2xb")),
        Err(ArgError::Value("2xb".into()))
    );
    for bad in ["0%", "101%", "99999999999999999999999%"] {
        assert_eq!(
            Options::parse(&args(&format!("MAXMEMORY {bad}"))),
            Err(ArgError::Percent(bad.into()))
        );
    }
    for bad in ["%", "5.5%", "-5%", "5%%"] {
        assert_eq!(
            Options::parse(&args(&format!("MAXMEMORY {bad}"))),
            Err(ArgError::Value(bad.into()))
        );
    }
    for bad in ["TIMEOUT", "TIMEOUT x", "TIMEOUT 0"] {
        assert_eq!(
            Options::parse(&args(&format!("MAXMEMORY 1gb {bad}"))),
            Err(ArgError::Timeout)
        );
    }
    assert_eq!(
        Options::parse(&args("MAXMEMORY 1gb JSON")),
        Err(ArgError::Unknown("JSON".into()))
    );
    assert!(ArgError::Value("x".into())
        .to_string()
        .starts_with("argument must be a memory or percent value"));
}

fn node(addr: &str, role: Role, shard: &str, max: u64, used: u64, total: u64) -> NodeRead {
    Ok(NodeMemory {
        addr: addr.into(),
        role,
        shard: shard.into(),
        maxmemory: max,
        used_memory: used,
        total_system_memory: total,
        config_file: true,
    })
}

fn order(p: &Plan) -> Vec<&str> {
    p.steps.iter().map(|s| s.node.addr.as_str()).collect()
}

const GB: u64 = 1 << 30;

#[test]
fn writes_keep_replicas_at_or_above_their_masters() {
    // Raising from 1 GB: replicas first, then masters.
    let reads = vec![
        node("m1", Role::Master, "a", GB, 10, 8 * GB),
        node("r1", Role::Replica, "a", GB, 10, 8 * GB),
        node("m2", Role::Master, "b", GB, 10, 8 * GB),
        node("r2", Role::Replica, "b", GB, 10, 8 * GB),
    ];
    let p = plan(&reads, Target::Bytes(2 * GB), false).expect("plan");
    assert_eq!(order(&p), ["r1", "r2", "m1", "m2"]);
    assert_eq!(p.changed(), 4);
    // Lowering: masters first. Going to 0 (no limit) raises.
    let p = plan(&reads, Target::Bytes(GB / 2), false).expect("plan");
    assert_eq!(order(&p), ["m1", "m2", "r1", "r2"]);
    let p = plan(&reads, Target::Bytes(0), false).expect("plan");
    assert_eq!(order(&p), ["r1", "r2", "m1", "m2"]);
    // From no limit to any limit lowers.
    let unlimited = vec![
        node("r1", Role::Replica, "a", 0, 10, 8 * GB),
        node("m1", Role::Master, "a", 0, 10, 8 * GB),
    ];
    let p = plan(&unlimited, Target::Bytes(GB), false).expect("plan");
    assert_eq!(order(&p), ["m1", "r1"]);
    assert!(p.steps.iter().all(|s| s.new == GB));
}

#[test]
fn nothing_to_do_when_every_node_has_the_value() {
    let reads = vec![
        node("m1", Role::Master, "a", GB, 10, 8 * GB),
        node("r1", Role::Replica, "a", GB, 10, 8 * GB),
    ];
    let p = plan(&reads, Target::Bytes(GB), false).expect("plan");
    assert_eq!(p.changed(), 0);
    assert_eq!(
        verdict(&p, false),
        "NOTHING TO DO maxmemory already set on 2 nodes"
    );
    assert_eq!(
        verdict(&p, true),
        "NOTHING TO DO maxmemory already set on 2 nodes"
    );
    let p = plan(&reads, Target::Bytes(2 * GB), false).expect("plan");
    assert_eq!(verdict(&p, true), "DRYRUN would resize 2 nodes");
    assert_eq!(verdict(&p, false), "OK resized 2 nodes");
}

#[test]
fn refusals_come_before_any_write() {
    assert_eq!(plan(&[], Target::Bytes(GB), false), Err(Refusal::NoNodes));
    let down = Unreachable {
        addr: "r2".into(),
        error: "connection refused".into(),
    };
    let reads = vec![
        node("m1", Role::Master, "a", 0, 3 * GB, 8 * GB),
        node("r1", Role::Replica, "a", 0, 3 * GB, 0),
        node("m2", Role::Master, "b", 0, GB, 8 * GB),
        Err(down.clone()),
    ];
    // Unreachable first, whatever else is wrong.
    assert_eq!(
        plan(&reads, Target::Percent(10), false),
        Err(Refusal::Unreachable(vec![down]))
    );
    let reads = &reads[..3];
    let refusal = plan(reads, Target::Percent(10), true).expect_err("refused");
    assert_eq!(refusal, Refusal::NoSystemMemory(vec!["r1".into()]));
    let refusal = plan(reads, Target::Bytes(2 * GB), false).expect_err("refused");
    assert_eq!(
        refusal,
        Refusal::BelowUsed(vec![
            ("m1".into(), 3 * GB, 2 * GB),
            ("r1".into(), 3 * GB, 2 * GB)
        ])
    );
    let text = refusal.to_string();
    assert!(
        text.contains("m1 uses 3221225472 (3.00G)") && text.contains("FORCE"),
        "{text}"
    );
    // FORCE takes it; 0 (no limit) is never below.
    assert!(plan(reads, Target::Bytes(2 * GB), true).is_ok());
    assert!(plan(reads, Target::Bytes(0), false).is_ok());
}

#[test]
fn a_percent_is_of_the_smallest_host_in_each_shard() {
    let reads = vec![
        node("m1", Role::Master, "a", 0, 10, 16 * GB),
        node("r1", Role::Replica, "a", 0, 10, 8 * GB),
        node("m2", Role::Master, "b", 0, 10, 16 * GB),
        node("r2", Role::Replica, "b", 0, 10, 32 * GB),
    ];
    let p = plan(&reads, Target::Percent(50), false).expect("plan");
    let values: BTreeMap<&str, u64> = p
        .steps
        .iter()
        .map(|s| (s.node.addr.as_str(), s.new))
        .collect();
    assert_eq!(values["m1"], 4 * GB);
    assert_eq!(values["r1"], 4 * GB);
    assert_eq!(values["m2"], 8 * GB);
    assert_eq!(values["r2"], 8 * GB);
    let p = plan(&reads[..1], Target::Percent(100), false).expect("plan");
    assert_eq!(p.steps[0].new, 16 * GB);
}

#[test]
fn node_reads_and_report_lines() {
    use crate::cluster::parse_cluster_nodes;
    let view = "aaa 127.0.0.1:7001@17001 myself,slave bbb 0 0 1 connected\n\
                bbb 127.0.0.1:7000@17000 master - 0 0 1 connected 0-16383\n";
    let state = NodeState {
        addr: "127.0.0.1:7001".into(),
        cluster_enabled: true,
        view: parse_cluster_nodes(view, "127.0.0.1").expect("parses"),
        ..Default::default()
    };
    let n = node_memory(
        &state,
        "# Memory\r\nused_memory:2097152\r\nmaxmemory:0\r\ntotal_system_memory:1024\r\n",
        "# Server\r\nconfig_file:\r\n",
    );
    assert_eq!((n.role, n.shard.as_str()), (Role::Replica, "bbb"));
    assert_eq!(
        (n.used_memory, n.maxmemory, n.total_system_memory),
        (2 << 20, 0, 1024)
    );
    assert!(!n.config_file);
    let step = Step {
        node: n,
        new: 100 << 20,
    };
    assert_eq!(
        node_line(&step, None),
        "127.0.0.1:7001 replica old 0 (0B) new 104857600 (100.00M) used 2097152 (2.00M) \
         persist no (no config file)"
    );
    assert!(node_line(&step, Some(Persisted::Yes)).ends_with(" persisted yes"));
    assert_eq!(
        rewrite_outcome(&Value::Error(
            "ERR The server is running without a config file".into()
        )),
        Ok(Persisted::NoConfigFile)
    );
    assert_eq!(
        rewrite_outcome(&Value::Simple("OK".into())),
        Ok(Persisted::Yes)
    );
    assert!(rewrite_outcome(&Value::Error(
        "ERR Rewriting config file: Permission denied".into()
    ))
    .is_err());
}
