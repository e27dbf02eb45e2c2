//! What every connection the proxy opens to a node needs besides the address: the `AUTH` to
//! send first (the proxy's backend credentials) and the node-facing TLS configuration.
//!
//! Invariants: one [`Dialer`] per running proxy, built at start-up from its config and owned by
//! it (shared as an `Arc` by workers, the refresher and the admin engines), so two proxies in
//! one process never send each other's password or certificates. The credentials are fixed for
//! the proxy's life (`backend_user` / `backend_password` need a restart); the TLS part is the
//! proxy's [`Tls`], replaced whole on reload, and each new connection takes the current one
//! (connections already open keep theirs).

use crate::net::tls::{BackendTls, Tls};
use bytes::Bytes;
use std::sync::Arc;

/// How this proxy opens node connections: its credentials and its TLS configurations.
pub struct Dialer {
    auth: Option<Bytes>,
    tls: Arc<Tls>,
}

impl Dialer {
    /// A dialer that sends `auth` (an encoded `AUTH` request, see
    /// [`crate::backend::credentials::auth_frame`]) first on each connection, if any, and
    /// speaks TLS to the nodes when `tls` has a node-facing configuration at connect time.
    pub fn new(auth: Option<Bytes>, tls: Arc<Tls>) -> Dialer {
        Dialer { auth, tls }
    }

    /// No credentials and plain TCP (tests and tools talking to open nodes).
    pub fn plain() -> Dialer {
        Dialer::new(None, Arc::new(Tls::off()))
    }

    /// The `AUTH` request to send first on a new node connection, if credentials are
    /// configured.
    pub fn auth(&self) -> Option<&Bytes> {
        self.auth.as_ref()
    }

    /// The node-facing TLS configuration for a connection opened now, if TLS to the nodes is
    /// on.
    pub fn backend_tls(&self) -> Option<Arc<BackendTls>> {
        self.tls.backend()
    }
}
