//! Settings that could crash the proxy: absurd durations and sizes from `PROXY CONFIG SET`, the
//! config file and SIGHUP get an error naming the setting, and `PROXY CONFIG GET` patterns
//! built to make a matcher backtrack get their answer. The proxy keeps serving through all of it.

mod common;

use common::*;
use redis::Commands;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// A client connection that gives up after `T` (a proxy that hangs fails the test, not the run).
fn conn(proxy: &Proxy) -> redis::Connection {
    let c = proxy.conn();
    c.set_read_timeout(Some(T)).expect("read timeout");
    c.set_write_timeout(Some(T)).expect("write timeout");
    c
}

const ABSURD: &[(&str, &str)] = &[
    ("refresh_interval", "99999999999999999999999h"),
    ("shutdown_timeout", "99999999999999999999999h"),
    ("request_timeout", "18446744073709551616s"),
    ("refresh_min_gap", "169h"),
    ("connect_timeout", "100000000000000000000000000000us"),
    ("max_query_buffer", "17179869183gb"),
    ("max_bulk_len", "9223372036854775807"),
];

#[test]
fn absurd_values_through_proxy_config_set_are_refused_by_name() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = conn(&proxy);
    let huge = format!("1{}s", "0".repeat(400));
    let cases = ABSURD
        .iter()
        .map(|&(n, v)| (n, v.to_string()))
        .chain([("shutdown_timeout", huge)]);
    for (name, value) in cases {
        let before = proxy_config_get(&mut c, name);
        let e = proxy_cmd(&mut c, &["CONFIG", "SET", name, &value])
            .expect_err("an absurd value must be refused")
            .to_string();
        assert!(
            e.contains(name) && (e.contains("at most") || e.contains("bad duration")),
            "{name} = {value}: {e}"
        );
        assert_eq!(proxy_config_get(&mut c, name), before, "{name} changed");
    }
    let _: () = c.set("still", "serving").expect("SET after the refusals");
    let v: String = c.get("still").expect("GET after the refusals");
    assert_eq!(v, "serving");
}

#[test]
fn longest_allowed_durations_are_served() {
    // The bound is inclusive: the longest durations are accepted, and the timers that add them
    // to the clock (refresher, reconnect back-off, request deadlines) keep working.
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start_with(
        &cluster.seeds(),
        "refresh_min_gap = \"168h\"\nrefresh_interval = \"168h\"\nrequest_timeout = \"168h\"\nconnect_timeout = \"168h\"\nreconnect_backoff_max = \"168h\"\nslowlog_threshold = \"168h\"\n",
        true,
    );
    let mut c = conn(&proxy);
    let _: () = c.set("k", "v").expect("SET");
    // A refresh asked for within the gap waits for it instead of panicking.
    let _: () = proxy_query(&mut c, &["REFRESH"]).expect("PROXY REFRESH");
    proxy_cmd(&mut c, &["CONFIG", "SET", "shutdown_timeout", "168h"]).expect("168h is allowed");
    let v: String = c.get("k").expect("GET");
    assert_eq!(v, "v");
}

#[test]
fn config_get_patterns_of_many_stars_are_answered() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = conn(&proxy);
    // Makes a backtracking matcher try every way to share each name among the stars
    // (C(64, 24) ways for a 24-byte name) before failing on the `!`.
    let backtracking = format!("{}!", "*".repeat(40));
    let v: Vec<String> = proxy_query(&mut c, &["CONFIG", "GET", &backtracking])
        .expect("PROXY CONFIG GET with a backtracking pattern");
    assert!(v.is_empty(), "{v:?}");
    // Deep enough to overflow the stack of a recursive matcher.
    let stars = "*".repeat(1 << 20);
    let v: Vec<String> = proxy_query(
        &mut c,
        &["CONFIG", "GET", &format!("{stars}timeout{stars}")],
    )
    .expect("PROXY CONFIG GET with a million stars");
    assert!(v.contains(&"request_timeout".to_string()), "{v:?}");
    assert!(v.contains(&"shutdown_timeout".to_string()), "{v:?}");
    let _: () = c.set("still", "serving").expect("SET afterwards");
}

/// Runs the proxy binary on `toml` and waits (at most `T`) for it to exit; its exit code and
/// stderr. A proxy still running at the deadline is killed by its PID and reported as such.
fn run_with_file(toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("proxy.toml");
    let full = format!(
        "listen = \"127.0.0.1:{}\"\nmetrics_listen = \"\"\n{toml}\n",
        free_port()
    );
    std::fs::write(&cfg, full).expect("writing the config");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawning slotproxy");
    let deadline = Instant::now() + T;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&err_path).unwrap_or_default())
}

#[test]
fn absurd_values_in_the_config_file_stop_the_start_with_a_clear_error() {
    for &(name, value) in ABSURD {
        let value = if value.chars().all(|c| c.is_ascii_digit()) {
            value.to_string()
        } else {
            format!("{value:?}")
        };
        let (code, stderr) = run_with_file(&format!("{name} = {value}"));
        assert!(
            code.is_some_and(|c| c != 0),
            "{name} = {value}: exit {code:?}, {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name} = {value}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains("at most"),
            "{name} = {value}: {stderr}"
        );
    }
}

#[test]
fn sighup_with_absurd_values_keeps_the_running_settings() {
    let cluster = cluster(3, 1, 0);
    let proxy = Proxy::start(&cluster);
    let mut c = conn(&proxy);
    let good = std::fs::read_to_string(&proxy.config_path).expect("config");
    for &(name, value) in &ABSURD[..3] {
        let before = proxy_config_get(&mut c, name);
        std::fs::write(
            &proxy.config_path,
            format!("{good}\n{name} = \"{value}\"\nslowlog_max_len = 7\n"),
        )
        .expect("writing the config");
        proxy.signal("HUP");
        // The reload is refused as a whole: wait for the proxy to say so.
        let deadline = Instant::now() + T;
        while proxy.log().matches(name).count() == 0 {
            assert!(
                Instant::now() < deadline,
                "no reload error: {}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
        assert_eq!(proxy_config_get(&mut c, name), before);
        assert_eq!(proxy_config_get(&mut c, "slowlog_max_len"), "128");
        let _: () = c.set("still", "serving").expect("SET after SIGHUP");
    }
}
