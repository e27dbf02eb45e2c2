//! Commands the proxy answers itself: connection commands, SLOWLOG, and the `PROXY` admin
//! namespace (INFO is in [`crate::metrics::info`]). Replies use Redis's own texts, so clients written for Redis behave the same.
//!
//! The proxy presents itself as a standalone Redis (`cluster_enabled:0`, HELLO's `mode` is
//! `standalone`): clients such as redis-py switch to cluster mode when they see a cluster, and
//! then bypass the proxy.

use crate::route::resp;
use crate::route::router::Local;
use crate::session::clients;
use crate::shared::Shared;
use bytes::{Bytes, BytesMut};

/// What the proxy knows about one client connection.
#[derive(Debug)]
pub struct ClientState {
    /// `CLIENT ID`.
    pub id: u64,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// The client switched to RESP3 with `HELLO 3`.
    pub resp3: bool,
    /// The authenticated user (and its hold on the user's connection count), when users are
    /// configured.
    pub user: Option<crate::access::Session>,
    /// The client's address, read once at accept: for the failed-AUTH limit and the slow log.
    pub peer: Option<std::net::SocketAddr>,
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
        Local::Auth => auth(&args[1..], client, shared).into(),
        Local::Hello => hello(args, client, shared).into(),
        Local::ClientSetName => match set_name(client, &args[2]) {
            Ok(()) => ok().into(),
            Err(e) => e.into(),
        },
        Local::ClientGetName => match &client.name {
            Some(n) => resp::bulk(n).into(),
            None if client.resp3 => Bytes::from_static(resp::NULL3).into(),
            None => Bytes::from_static(resp::NULL_BULK).into(),
        },
        Local::ClientId => resp::int(client.id as i64).into(),
        // The proxy's user: the nodes only ever see the proxy's own backend login.
        Local::AclWhoami => resp::bulk(
            client
                .user
                .as_ref()
                .map_or("default", |u| &u.name)
                .as_bytes(),
        )
        .into(),
        Local::ClientList => client_list(&args[2..], shared).into(),
        Local::ClientInfo => {
            let now = shared.metrics.started.elapsed().as_millis() as u64;
            let me = shared
                .registries
                .clients
                .snapshot()
                .into_iter()
                .find(|e| e.id == client.id);
            match me {
                Some(e) => resp::bulk(format!("{}\n", clients::line(&e, now)).as_bytes()).into(),
                None => resp::error("ERR slotproxy: this client is not registered").into(),
            }
        }
        Local::ClientKill => match clients::KillFilter::parse(&args[2..]) {
            Ok(f) => {
                let n = shared.registries.clients.kill(&f, client.id);
                match (f.old_form, n) {
                    (true, 0) => resp::error("ERR No such client").into(),
                    (true, _) => ok().into(),
                    (false, n) => resp::int(n as i64).into(),
                }
            }
            Err(e) => resp::error(&e.to_string()).into(),
        },
        Local::ClientPause => match crate::session::pause::parse(&args[1..]) {
            Ok((ms, mode)) => {
                let now = shared.metrics.started.elapsed().as_millis() as u64;
                shared.registries.pause.pause(mode, ms, now);
                ok().into()
            }
            Err(e) => resp::error(&e).into(),
        },
        Local::ClientUnpause => {
            shared.registries.pause.unpause();
            ok().into()
        }
        Local::ClientNoEvict => match text_arg(&args[2]).to_ascii_lowercase().as_str() {
            "on" | "off" => ok().into(),
            _ => resp::error("ERR syntax error").into(),
        },
        // INFO asks the backends; the session runs it asynchronously (see `crate::metrics::info`).
        Local::Info => resp::error("ERR slotproxy: INFO must be run by the session").into(),
        Local::Slowlog => crate::metrics::slowlog::answer(args, &shared.metrics.slowlog).into(),
        // Admin commands are asynchronous; the session runs them (see `session`).
        Local::Proxy
        | Local::Reset
        | Local::ClientReply
        | Local::ClientUnblock
        | Local::ClientTracking
        | Local::ConfigGet
        | Local::Monitor
        | Local::ReadOnly
        | Local::ReadWrite => {
            resp::error("ERR slotproxy: this command must be run by the session").into()
        }
    }
}

/// CLIENT LIST, optionally filtered by `TYPE normal|pubsub|master|replica` or `ID id ...`.
fn client_list(filters: &[Bytes], shared: &Shared) -> Bytes {
    let mut kind: Option<String> = None;
    let mut ids: Option<Vec<u64>> = None;
    match filters {
        [] => {}
        [t, v] if t.eq_ignore_ascii_case(b"TYPE") => {
            let v = text_arg(v).to_ascii_lowercase();
            if !matches!(
                v.as_str(),
                "normal" | "pubsub" | "master" | "replica" | "slave"
            ) {
                return resp::error(&format!("ERR Unknown client type '{v}'"));
            }
            kind = Some(v);
        }
        [t, rest @ ..] if t.eq_ignore_ascii_case(b"ID") && !rest.is_empty() => {
            let mut list = Vec::new();
            for r in rest {
                match text_arg(r).parse::<u64>() {
                    Ok(n) if n > 0 => list.push(n),
                    _ => return resp::error("ERR Invalid client ID"),
                }
            }
            ids = Some(list);
        }
        _ => return resp::error("ERR syntax error"),
    }
    let now = shared.metrics.started.elapsed().as_millis() as u64;
    let mut out = String::new();
    for e in shared.registries.clients.snapshot() {
        if ids.as_ref().is_some_and(|l| !l.contains(&e.id)) {
            continue;
        }
        if let Some(k) = &kind {
            let f = clients::KillFilter {
                kind: Some(k.clone()),
                ..Default::default()
            };
            if !f.matches(&e, 0) {
                continue;
            }
        }
        out.push_str(&clients::line(&e, now));
        out.push('\n');
    }
    resp::bulk(out.as_bytes())
}

/// AUTH. With users configured: `AUTH <password>` is user `default`, `AUTH <user> <password>`
/// any user; success sets the client's user. With none: the `default` user accepts any
/// password, as Redis's `nopass` default user does, and a bare password gets Redis's "no
/// password configured" error.
fn auth(args: &[Bytes], client: &mut ClientState, shared: &Shared) -> Bytes {
    if shared.registries.users.active() {
        let (name, pass) = match args {
            [pass] => (&b"default"[..], pass),
            [name, pass] => (&name[..], pass),
            _ => return resp::error("ERR syntax error"),
        };
        let limit = shared.settings.config.auth_failures_per_minute;
        if let Some(ip) = client.peer.map(|a| a.ip()) {
            if !shared.registries.auth_guard.allowed(ip, limit) {
                return resp::error(
                    "ERR slotproxy: too many failed AUTH attempts from this address; try again in a minute",
                );
            }
        }
        return match shared.registries.users.authenticate(name, pass) {
            // Already logged in as it: keep the connection's hold (a second one could trip
            // the user's own max_connections).
            Some(u)
                if client
                    .user
                    .as_ref()
                    .is_some_and(|s| std::sync::Arc::ptr_eq(&s.user, &u)) =>
            {
                ok()
            }
            // The old login is released only once the new one is granted: a refused AUTH
            // leaves the client as it was, as a failed AUTH does in Redis.
            Some(u) => match u.open_session() {
                Ok(s) => {
                    client.user = Some(s);
                    ok()
                }
                Err(e) => {
                    shared
                        .registries
                        .auth_guard
                        .user_limited
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    resp::error(&e.to_string())
                }
            },
            None => {
                if let Some(ip) = client.peer.map(|a| a.ip()) {
                    shared.registries.auth_guard.failed(ip);
                }
                resp::error(crate::access::WRONGPASS)
            }
        };
    }
    match args {
        [_pass] => resp::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        [user, _pass] if user.as_ref() == b"default" => ok(),
        _ => resp::error("WRONGPASS invalid username-password pair or user is disabled."),
    }
}

fn set_name(client: &mut ClientState, name: &Bytes) -> Result<(), Bytes> {
    valid_name(name)?;
    client.name = (!name.is_empty()).then(|| name.clone());
    Ok(())
}

fn valid_name(name: &[u8]) -> Result<(), Bytes> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(resp::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

/// Redis 7.0's answer to HELLO from a client that is not logged in and gives no AUTH.
pub const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";

fn hello(args: &[Bytes], client: &mut ClientState, shared: &Shared) -> Bytes {
    let mut resp3 = client.resp3;
    if let Some(v) = args.get(1) {
        match text_arg(v).parse::<i64>() {
            Ok(2) => resp3 = false,
            Ok(3) => resp3 = true,
            Ok(_) => return resp::error("NOPROTO unsupported protocol version"),
            Err(_) => return resp::error("ERR Protocol version is not an integer or out of range"),
        }
    }
    // All or nothing: every option is checked before the AUTH is tried, so a HELLO that
    // fails changes neither the login, the name nor the protocol.
    let mut i = 2;
    let mut new_name = None;
    let mut credentials = None;
    while i < args.len() {
        let opt = &args[i];
        let more = args.len() - i - 1;
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            credentials = Some(&args[i + 1..i + 3]);
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
    // Before login, HELLO would reveal the backend's version: Redis's NOAUTH.
    if credentials.is_none() && shared.registries.users.active() && client.user.is_none() {
        return resp::error(HELLO_NOAUTH);
    }
    if let Some(n) = &new_name {
        if let Err(e) = valid_name(n) {
            return e;
        }
    }
    if let Some(c) = credentials {
        let r = auth(c, client, shared);
        if resp::is_error(&r) {
            return r;
        }
    }
    if let Some(n) = new_name {
        if let Err(e) = set_name(client, &n) {
            return e;
        }
    }
    // The switch takes effect with this reply, as in Redis: HELLO 3 is answered in RESP3.
    client.resp3 = resp3;
    let mut out = BytesMut::new();
    if resp3 {
        out.extend_from_slice(b"%7\r\n");
    } else {
        resp::put_array_header(&mut out, 14);
    }
    for (k, v) in [
        ("server", "redis".to_string()),
        ("version", shared.topology.redis_version()),
    ] {
        resp::put_bulk(&mut out, k.as_bytes());
        resp::put_bulk(&mut out, v.as_bytes());
    }
    resp::put_bulk(&mut out, b"proto");
    resp::put_int(&mut out, if resp3 { 3 } else { 2 });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    use crate::route::resp::test_args as args;

    fn run(a: &[&str], c: &mut ClientState) -> String {
        let shared = Shared::new(Config::default(), 1, 7617);
        let r = answer(
            crate::route::router::route(&args(a), &mut Vec::new())
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
            user: None,
            peer: None,
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
        assert!(run(&["HELLO", "3"], &mut c).starts_with("%7\r\n"));
        assert!(c.resp3);
        assert_eq!(
            run(&["HELLO", "4"], &mut c),
            "-NOPROTO unsupported protocol version\r\n"
        );
        assert!(run(&["HELLO", "2"], &mut c).starts_with("*14\r\n"));
        assert!(!c.resp3);
        assert!(run(&["HELLO", "2", "SETNAME", "x"], &mut c).contains("standalone"));
        assert_eq!(c.name.as_deref(), Some(&b"x"[..]));
        assert!(run(&["AUTH", "pw"], &mut c).starts_with("-ERR AUTH <password> called"));
        assert!(run(&["AUTH", "bob", "pw"], &mut c).starts_with("-WRONGPASS"));
    }
}
