//! Listening sockets for the proxy's client port and its metrics endpoint.

use anyhow::Context;
use std::net::SocketAddr;

/// A non-blocking listener on `listen` with SO_REUSEADDR, so a restarted proxy can bind again
/// while connections it closed are still in TIME_WAIT.
pub fn bind(listen: &str) -> anyhow::Result<std::net::TcpListener> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("listen address {listen:?} is not ip:port"))?;
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())
        .with_context(|| format!("binding {listen}"))?;
    sock.listen(1024)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}
