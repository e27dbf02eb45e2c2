//! The network edge: connections (plain or TLS, client or backend side) and listening sockets.

pub mod listener;
pub mod stream;
pub mod tls;
