//! `PROXY FIX` against real redis-server clusters: the open slot a killed `redis-cli --cluster
//! reshard` leaves (keys on both sides) is finished, and an uncovered slot goes to the master
//! holding its keys; CHECK's findings point to FIX, and no key is lost.

mod common;
mod slots_helpers;

use common::*;
use slots_helpers::*;
use std::time::Instant;

#[test]
fn fix_finishes_a_killed_redis_cli_reshard() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let src = owner_of(&cluster, 0, 0);
    let dst = (src + 1) % 3;
    let (a, b) = (cluster.nodes[src].addr(), cluster.nodes[dst].addr());
    // 40 keys in each of the source's first 64 slots.
    let mut reference = Vec::new();
    for slot in 0..64u16 {
        let tag = tag_for(slot);
        for k in 0..40 {
            reference.push((
                format!("{{{tag}}}:{k}"),
                format!("v{slot}:{k}").into_bytes(),
            ));
        }
    }
    for chunk in reference.chunks(200) {
        let mut p = redis::pipe();
        for (k, v) in chunk {
            p.cmd("SET").arg(k).arg(v.as_slice()).ignore();
        }
        let () = p.query(&mut c).expect("writing");
    }

    // A reshard of those slots, one key per MIGRATE, killed by PID while a slot has keys on
    // both sides.
    let mut cli = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &a,
            "--cluster-from",
            &cluster.nodes[src].node_id,
            "--cluster-to",
            &cluster.nodes[dst].node_id,
            "--cluster-slots",
            "64",
            "--cluster-yes",
            "--cluster-pipeline",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli");
    let deadline = Instant::now() + LIVENESS;
    let mut killed_mid_slot = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = cli.try_wait() {
            break;
        }
        if let Some(s) = migrating_on(&a) {
            if count_in(&a, s) > 0 && count_in(&b, s) > 0 {
                let _ = cli.kill();
                killed_mid_slot = true;
                break;
            }
        }
    }
    let _ = cli.kill();
    let _ = cli.wait();
    // The kill may land just after the slot's last key moved; then open one by hand in the
    // same state (importing, migrating, half the keys moved).
    let open = migrating_on(&a).filter(|&s| count_in(&a, s) > 0 && count_in(&b, s) > 0);
    if open.is_none() {
        eprintln!("redis-cli was not caught mid-slot (killed: {killed_mid_slot}); opening slot 63 by hand");
        let slot = 63u16;
        let owner = owner_of(&cluster, src, slot);
        assert_eq!(owner, src, "slot 63 is still the source's");
        let s = slot.to_string();
        cluster
            .command(
                dst,
                &[
                    "CLUSTER",
                    "SETSLOT",
                    &s,
                    "IMPORTING",
                    &cluster.nodes[src].node_id,
                ],
            )
            .expect("IMPORTING");
        cluster
            .command(
                src,
                &[
                    "CLUSTER",
                    "SETSLOT",
                    &s,
                    "MIGRATING",
                    &cluster.nodes[dst].node_id,
                ],
            )
            .expect("MIGRATING");
        let keys: Vec<String> = (0..20)
            .map(|k| format!("{{{}}}:{k}", tag_for(slot)))
            .collect();
        let port = cluster.nodes[dst].port.to_string();
        let mut args = vec![
            "MIGRATE",
            cluster.nodes[dst].ip.as_str(),
            &port,
            "",
            "0",
            "5000",
            "KEYS",
        ];
        args.extend(keys.iter().map(String::as_str));
        cluster.command(src, &args).expect("MIGRATE");
    }
    let open = migrating_on(&a).expect("a slot left migrating");
    assert!(count_in(&a, open) > 0 && count_in(&b, open) > 0);
    let check = proxy_lines(&mut c, &["CHECK"]).expect("CHECK");
    assert!(
        check
            .iter()
            .any(|l| l.starts_with("ERROR open-slot") && l.ends_with("hint: PROXY FIX")),
        "{check:?}"
    );
    // REBALANCE SLOTS refuses, changing nothing, and points to FIX.
    let e = proxy_lines(&mut c, &["REBALANCE", "SLOTS"]).expect_err("refused");
    assert!(e.to_string().contains("run PROXY FIX first"), "{e}");

    let dry = proxy_lines(&mut c, &["FIX", "DRYRUN"]).expect("FIX DRYRUN");
    assert!(dry[0].starts_with("DRYRUN fixes 1 slot(s)"), "{dry:?}");
    assert!(
        dry.iter()
            .any(|l| l.starts_with(&format!("finish {open} {a} -> {b}"))),
        "{dry:?}"
    );
    assert_eq!(migrating_on(&a), Some(open), "DRYRUN changed nothing");

    let r = proxy_lines(&mut c, &["FIX"]).expect("FIX");
    assert!(r[0].starts_with("OK fixed 1 slot(s)"), "{r:?}");
    let all = cluster.seeds();
    assert!(open_slots(&all).is_empty(), "{:?}", open_slots(&all));
    assert_eq!(count_in(&a, open), 0);
    check_ok(&mut c);
    verify(&mut c, &reference);
    let again = proxy_lines(&mut c, &["FIX"]).expect("FIX again");
    assert_eq!(again[0], "NOTHING TO DO no open or uncovered slot");
}

#[test]
fn fix_assigns_an_uncovered_slot_to_the_master_holding_its_keys() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = proxy.conn();
    let slot = 5u16;
    let tag = tag_for(slot);
    let reference: Vec<(String, Vec<u8>)> = (0..30)
        .map(|k| (format!("{{{tag}}}:{k}"), format!("u{k}").into_bytes()))
        .collect();
    for (k, v) in &reference {
        let () = redis::cmd("SET")
            .arg(k)
            .arg(v.as_slice())
            .query(&mut c)
            .expect("SET");
    }
    let owner = owner_of(&cluster, 0, slot);
    let holder = cluster.nodes[owner].addr();
    // The owner drops the slot but keeps its keys: no master serves it.
    cluster
        .command(owner, &["CLUSTER", "DELSLOTS", &slot.to_string()])
        .expect("DELSLOTS");
    let check = eventually_ok("CHECK to see the uncovered slot", LIVENESS, || {
        let r = proxy_lines(&mut c, &["CHECK"]).map_err(|e| e.to_string())?;
        if r.iter().any(|l| l.starts_with("ERROR uncovered")) {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    });
    assert!(
        check
            .iter()
            .any(|l| l == "ERROR uncovered 1 slot(s) have no master: 5; hint: PROXY FIX"),
        "{check:?}"
    );
    let dry = proxy_lines(&mut c, &["FIX", "DRYRUN"]).expect("DRYRUN");
    assert!(
        dry.iter()
            .any(|l| l == &format!("assign 5 to {holder} (keys 30)")),
        "{dry:?}"
    );
    let r = proxy_lines(&mut c, &["FIX"]).expect("FIX");
    assert!(r[0].starts_with("OK fixed 1 slot(s)"), "{r:?}");
    assert_eq!(owner_of(&cluster, owner, slot), owner);
    check_ok(&mut c);
    verify(&mut c, &reference);
}
