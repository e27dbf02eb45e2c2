//! The proxy's own credentials for the cluster's nodes (an ACL user, or a `requirepass`
//! password), used on every connection the proxy opens to a node: the shared data-path
//! connections, dedicated connections, the topology refresher and the admin engines.
//!
//! Invariants: set once at start-up, before any connection is opened, and read-only after
//! (every place that connects reads the same value); a node that refuses them is a
//! configuration error, logged as such, never passed to clients as a bare `NOAUTH`.

use bytes::Bytes;
use std::sync::OnceLock;

static AUTH: OnceLock<Option<Bytes>> = OnceLock::new();

/// Installs the credentials from the settings (`backend_user` may be empty: `AUTH <password>`).
/// Later calls are ignored; an empty password means none.
pub fn install(user: &str, password: &str) {
    let cmd = (!password.is_empty()).then(|| {
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
    });
    let _ = AUTH.set(cmd);
}

/// The `AUTH` request to send first on a new node connection, if credentials are configured.
pub fn auth_command() -> Option<Bytes> {
    AUTH.get().and_then(|c| c.clone())
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
