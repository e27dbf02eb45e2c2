//! The proxy's own credentials for the cluster's nodes (an ACL user, or a `requirepass`
//! password), used on every connection the proxy opens to a node: the shared data-path
//! connections, dedicated connections, the topology refresher and the admin engines.
//!
//! Invariants: turned into an `AUTH` request once at start-up, from the config of the proxy
//! being started, and carried by that proxy's [`crate::net::dialer::Dialer`], read-only after
//! (every place that connects sends the same one, and another proxy in the same process has
//! its own); a node that refuses them is a configuration error, logged as such, never passed
//! to clients as a bare `NOAUTH`.

use bytes::Bytes;

/// The `AUTH` request for the settings `backend_user` (may be empty: `AUTH <password>`) and
/// `backend_password`; `None` when the password is empty (no credentials).
pub fn auth_frame(user: &str, password: &str) -> Option<Bytes> {
    (!password.is_empty()).then(|| {
        let frame = if user.is_empty() {
            crate::route::resp::encode_command(&[&b"AUTH"[..], password.as_bytes()])
        } else {
            crate::route::resp::encode_command(&[
                &b"AUTH"[..],
                user.as_bytes(),
                password.as_bytes(),
            ])
        };
        frame.freeze()
    })
}

/// The error clients get when a node demands authentication the proxy cannot give.
pub fn refused(node: &str, reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply.get(1..).unwrap_or_default())
        .trim_end()
        .to_string();
    format!(
        "ERR slotproxy: node {node} refused the proxy's credentials ({text}); check backend_user / backend_password"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_frame_names_the_user_only_when_there_is_one() {
        assert_eq!(auth_frame("", ""), None);
        assert_eq!(auth_frame("proxy", ""), None);
        assert_eq!(
            auth_frame("", "pw").as_deref(),
            Some(&b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"[..])
        );
        assert_eq!(
            auth_frame("proxy", "pw").as_deref(),
            Some(&b"*3\r\n$4\r\nAUTH\r\n$5\r\nproxy\r\n$2\r\npw\r\n"[..])
        );
    }
}
