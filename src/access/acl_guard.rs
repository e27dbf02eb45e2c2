//! The node ACL changes the proxy will not send: the ones that would lock the proxy itself out
//! of the cluster. `ACL SETUSER` and `ACL DELUSER` go to every node, and the proxy logs in to
//! every node (data path, refresher, admin engines) as one Redis user: `backend_user`, or
//! `default` when that is empty (with `backend_password`, or with no AUTH at all when the
//! password is empty too, which relies on `default` being `nopass`).
//!
//! Refused, with an error saying why:
//! - with a `backend_user`: any `ACL SETUSER` of that user and any `ACL DELUSER` naming it
//!   (a change of its passwords, its on/off state or its command rights can each cut the
//!   proxy off);
//! - without one: `ACL SETUSER default` with a rule that changes its passwords (`>`, `<`, `#`,
//!   `!`, `nopass`, `resetpass`) or switches it off (`off`, `reset`). Its other rules (key
//!   patterns, commands) pass: applications share that user with the proxy.
//!
//! User names are compared exactly (Redis's are case-sensitive); rule keywords ignoring case,
//! as Redis reads them. Pure: the session passes the settings in.

use bytes::Bytes;

/// Why the request `args` (`ACL SETUSER ...` / `ACL DELUSER ...`) must not reach the nodes of
/// a proxy that logs in to them as `backend_user` (empty: `default`); `None` when it may.
pub fn lockout(args: &[Bytes], backend_user: &str) -> Option<String> {
    let sub = args.get(1)?;
    let users = args.get(2..)?;
    let me = if backend_user.is_empty() {
        "default"
    } else {
        backend_user
    };
    let named = !backend_user.is_empty() && backend_user != "default";
    if sub.eq_ignore_ascii_case(b"deluser") {
        // Redis itself refuses to delete `default`, in its own words.
        return (named && users.iter().any(|u| u.as_ref() == me.as_bytes())).then(|| {
            format!(
                "ERR slotproxy: refused ACL DELUSER {me}: the proxy logs in to the nodes as this user (backend_user), so deleting it would cut the proxy off the cluster"
            )
        });
    }
    if !sub.eq_ignore_ascii_case(b"setuser") {
        return None;
    }
    let (user, rules) = users.split_first()?;
    if user.as_ref() != me.as_bytes() {
        return None;
    }
    if named {
        return Some(format!(
            "ERR slotproxy: refused ACL SETUSER {me}: the proxy logs in to the nodes as this user (backend_user), and a change to it can cut the proxy off the cluster; change it on the nodes directly"
        ));
    }
    let cutting = rules.iter().find(|r| {
        matches!(r.first(), Some(b'>' | b'<' | b'#' | b'!'))
            || ["off", "reset", "resetpass", "nopass"]
                .iter()
                .any(|k| r.eq_ignore_ascii_case(k.as_bytes()))
    })?;
    // A password rule is shown by its kind only: the password itself is never echoed.
    let shown = match cutting.first() {
        Some(&c @ (b'>' | b'<' | b'#' | b'!')) => format!("{}...", c as char),
        _ => String::from_utf8_lossy(cutting).into_owned(),
    };
    Some(format!(
        "ERR slotproxy: refused ACL SETUSER default '{shown}': the proxy logs in to the nodes as 'default' (no backend_user), and changing its passwords or switching it off can cut the proxy off the cluster; change it on the nodes directly"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn the_default_user_keeps_its_login_when_the_proxy_uses_it() {
        for rules in [
            "off",
            "OFF",
            "reset",
            "resetpass",
            "nopass",
            ">secret",
            "<secret",
            "#5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
            "!5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
            "on ~* +@all off",
        ] {
            let line = format!("ACL SETUSER default {rules}");
            let why = lockout(&args(&line), "").unwrap_or_else(|| panic!("{line} passed"));
            assert!(why.contains("no backend_user"), "{why}");
            assert!(!why.contains("secret"), "the password is not echoed: {why}");
        }
        for line in [
            "ACL SETUSER default ~app:* +@read",
            "ACL SETUSER default on",
            "ACL SETUSER default",
            "ACL SETUSER Default off",
            "ACL SETUSER app off",
            "ACL DELUSER default",
            "ACL LIST",
        ] {
            assert_eq!(lockout(&args(line), ""), None, "{line}");
        }
    }

    #[test]
    fn a_backend_user_is_left_alone_entirely() {
        for line in [
            "ACL SETUSER proxy on",
            "ACL SETUSER proxy ~* +@all",
            "ACL setuser proxy >new",
            "ACL DELUSER app proxy",
        ] {
            let why = lockout(&args(line), "proxy").unwrap_or_else(|| panic!("{line} passed"));
            assert!(why.contains("backend_user"), "{why}");
            assert!(why.contains("proxy"), "{why}");
        }
        for line in [
            "ACL SETUSER default off",
            "ACL SETUSER app >pw",
            "ACL DELUSER app",
            "ACL SETUSER PROXY off",
        ] {
            assert_eq!(lockout(&args(line), "proxy"), None, "{line}");
        }
        // backend_user = "default" is the default user.
        assert!(lockout(&args("ACL SETUSER default off"), "default").is_some());
        assert!(lockout(&args("ACL SETUSER default +@all"), "default").is_none());
    }
}
