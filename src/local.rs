//! Commands the proxy answers itself: connection commands, INFO, and the `PROXY` admin
//! namespace. Replies use Redis's own texts, so clients written for Redis behave the same.
//!
//! The proxy presents itself as a standalone Redis (`cluster_enabled:0`, HELLO's `mode` is
//! `standalone`): clients such as redis-py switch to cluster mode when they see a cluster, and
//! then bypass the proxy.

use crate::resp;
use crate::router::Local;
use crate::shared::Shared;
use bytes::{Bytes, BytesMut};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// What the proxy knows about one client connection.
#[derive(Debug)]
pub struct ClientState {
    /// `CLIENT ID`.
    pub id: u64,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// The client switched to RESP3 with `HELLO 3`.
    pub resp3: bool,
}

/// A reply composed by the proxy.
pub struct LocalReply {
    /// The frame to send.
    pub reply: Bytes,
    /// Close the connection once the reply is written (QUIT).
    pub close: bool,
}

impl From<Bytes> for LocalReply {
    fn from(reply: Bytes) -> Self {
        LocalReply {
            reply,
            close: false,
        }
    }
}

fn ok() -> Bytes {
    resp::simple("OK")
}

fn text_arg(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Answers `cmd`, whose arity the router has checked.
pub fn answer(cmd: Local, args: &[Bytes], client: &mut ClientState, shared: &Shared) -> LocalReply {
    match cmd {
        Local::Ping => match args.len() {
            1 => resp::simple("PONG").into(),
            2 => resp::bulk(&args[1]).into(),
            _ => resp::error("ERR wrong number of arguments for 'ping' command").into(),
        },
        Local::Echo => resp::bulk(&args[1]).into(),
        Local::Quit => LocalReply {
            reply: ok(),
            close: true,
        },
        Local::Select => match text_arg(&args[1]).parse::<i64>() {
            Ok(0) => ok().into(),
            Ok(_) => resp::error("ERR SELECT is not allowed in cluster mode").into(),
            Err(_) => resp::error("ERR value is not an integer or out of range").into(),
        },
        Local::Auth => auth(&args[1..]).into(),
        Local::Hello => hello(args, client, shared).into(),
        Local::ClientSetName => match set_name(client, &args[2]) {
            Ok(()) => ok().into(),
            Err(e) => e.into(),
        },
        Local::ClientGetName => match &client.name {
            Some(n) => resp::bulk(n).into(),
            None => Bytes::from_static(resp::NULL_BULK).into(),
        },
        Local::ClientId => resp::int(client.id as i64).into(),
        Local::Info => resp::bulk(info(&args[1..], shared).as_bytes()).into(),
        // Admin commands are asynchronous; the session runs them (see `session`).
        Local::Proxy | Local::Reset => {
            resp::error("ERR slotproxy: this command must be run by the session").into()
        }
    }
}

/// AUTH with no users configured: the `default` user accepts any password, as Redis's
/// `nopass` default user does; a bare password gets Redis's "no password configured" error.
fn auth(args: &[Bytes]) -> Bytes {
    match args {
        [_pass] => resp::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        [user, _pass] if user.as_ref() == b"default" => ok(),
        _ => resp::error("WRONGPASS invalid username-password pair or user is disabled."),
    }
}

fn set_name(client: &mut ClientState, name: &Bytes) -> Result<(), Bytes> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(resp::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    client.name = (!name.is_empty()).then(|| name.clone());
    Ok(())
}

fn hello(args: &[Bytes], client: &mut ClientState, shared: &Shared) -> Bytes {
    if let Some(v) = args.get(1) {
        match text_arg(v).parse::<i64>() {
            Ok(2) => {}
            Ok(3) => return resp::error("NOPROTO unsupported protocol version"),
            Ok(_) => return resp::error("NOPROTO unsupported protocol version"),
            Err(_) => return resp::error("ERR Protocol version is not an integer or out of range"),
        }
    }
    let mut i = 2;
    let mut new_name = None;
    while i < args.len() {
        let opt = &args[i];
        let more = args.len() - i - 1;
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            let r = auth(&args[i + 1..i + 3]);
            if resp::is_error(&r) {
                return r;
            }
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            new_name = Some(args[i + 1].clone());
            i += 2;
        } else {
            return resp::error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                text_arg(opt)
            ));
        }
    }
    if let Some(n) = new_name {
        if let Err(e) = set_name(client, &n) {
            return e;
        }
    }
    let mut out = BytesMut::new();
    resp::put_array_header(&mut out, 14);
    for (k, v) in [
        ("server", "redis".to_string()),
        ("version", shared.redis_version()),
    ] {
        resp::put_bulk(&mut out, k.as_bytes());
        resp::put_bulk(&mut out, v.as_bytes());
    }
    resp::put_bulk(&mut out, b"proto");
    resp::put_int(&mut out, 2);
    resp::put_bulk(&mut out, b"id");
    resp::put_int(&mut out, client.id as i64);
    for (k, v) in [("mode", "standalone"), ("role", "master")] {
        resp::put_bulk(&mut out, k.as_bytes());
        resp::put_bulk(&mut out, v.as_bytes());
    }
    resp::put_bulk(&mut out, b"modules");
    resp::put_array_header(&mut out, 0);
    out.freeze()
}

/// INFO in Redis's format. Sections: server, clients, stats, cluster; `INFO` with no argument,
/// `default`, `all` or `everything` gives them all.
pub fn info(sections: &[Bytes], shared: &Shared) -> String {
    let want = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                s.eq_ignore_ascii_case(name.as_bytes())
                    || s.eq_ignore_ascii_case(b"all")
                    || s.eq_ignore_ascii_case(b"default")
                    || s.eq_ignore_ascii_case(b"everything")
            })
    };
    let mut out = String::new();
    let uptime = shared.started.elapsed().as_secs();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{}\r\nslotproxy_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nworkers:{}\r\n\r\n",
            shared.redis_version(),
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            shared.port,
            uptime,
            uptime / 86400,
            shared.workers.len(),
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            shared.client_count(),
            shared.config.max_clients
        );
    }
    if want("stats") {
        let accepted: u64 = shared
            .workers
            .iter()
            .map(|w| w.accepted.load(Relaxed))
            .sum();
        let commands: u64 = shared
            .workers
            .iter()
            .map(|w| w.commands.load(Relaxed))
            .sum();
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{accepted}\r\ntotal_commands_processed:{commands}\r\nrejected_connections:{}\r\n\r\n",
            shared.rejected_clients.load(Relaxed)
        );
    }
    if want("cluster") {
        let map = shared.map.load();
        let _ = write!(
            out,
            "# Cluster\r\ncluster_enabled:0\r\nslotproxy_masters:{}\r\nslotproxy_slots_served:{}\r\nslotproxy_slot_map_version:{}\r\nslotproxy_slot_map_source:{}\r\n\r\n",
            map.nodes.len(),
            map.coverage(),
            map.version,
            map.source
        );
    }
    if out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn run(a: &[&str], c: &mut ClientState) -> String {
        let shared = Shared::new(Config::default(), 1, 7617);
        let r = answer(
            crate::router::route(&args(a), &mut Vec::new())
                .local()
                .expect("local"),
            &args(a),
            c,
            &shared,
        );
        String::from_utf8_lossy(&r.reply).into_owned()
    }

    #[test]
    fn connection_commands() {
        let mut c = ClientState {
            id: 7,
            name: None,
            resp3: false,
        };
        assert_eq!(run(&["PING"], &mut c), "+PONG\r\n");
        assert_eq!(run(&["ping", "hi"], &mut c), "$2\r\nhi\r\n");
        assert_eq!(run(&["SELECT", "0"], &mut c), "+OK\r\n");
        assert_eq!(
            run(&["SELECT", "1"], &mut c),
            "-ERR SELECT is not allowed in cluster mode\r\n"
        );
        assert_eq!(run(&["CLIENT", "GETNAME"], &mut c), "$-1\r\n");
        assert_eq!(run(&["CLIENT", "SETNAME", "app"], &mut c), "+OK\r\n");
        assert_eq!(run(&["CLIENT", "GETNAME"], &mut c), "$3\r\napp\r\n");
        assert!(run(&["CLIENT", "SETNAME", "a b"], &mut c).starts_with("-ERR Client names"));
        assert_eq!(run(&["CLIENT", "ID"], &mut c), ":7\r\n");
        assert_eq!(
            run(&["HELLO", "3"], &mut c),
            "-NOPROTO unsupported protocol version\r\n"
        );
        assert!(run(&["HELLO", "2", "SETNAME", "x"], &mut c).contains("standalone"));
        assert_eq!(c.name.as_deref(), Some(&b"x"[..]));
        assert!(run(&["AUTH", "pw"], &mut c).starts_with("-ERR AUTH <password> called"));
        assert!(run(&["AUTH", "bob", "pw"], &mut c).starts_with("-WRONGPASS"));
    }

    #[test]
    fn info_sections() {
        let shared = Shared::new(Config::default(), 2, 7617);
        let all = info(&[], &shared);
        assert!(all.contains("redis_version:") && all.contains("cluster_enabled:0"));
        let server = info(&args(&["server"]), &shared);
        assert!(server.starts_with("# Server") && !server.contains("# Cluster"));
    }
}
