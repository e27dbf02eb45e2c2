//! The network edge: connections (plain or TLS, client or backend side), what opening a node
//! connection needs (credentials and TLS, per proxy), and listening sockets.

pub mod dialer;
pub mod listener;
pub mod stream;
pub mod tls;
