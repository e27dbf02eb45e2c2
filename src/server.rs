//! Start-up and the accept loop: worker threads, balanced hand-off of new clients, the
//! topology refresher, and shutdown.
//!
//! One acceptor hands each new socket to the worker with the fewest clients, so a burst of
//! connections cannot pile onto one thread (the skew Envoy's users hit with unbalanced
//! accepts). Workers run a current-thread runtime each and never hand work to each other.

use crate::config::Config;
use crate::shared::Shared;
use crate::worker::Worker;
use crate::{session, topology};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// A running proxy's handle: where it listens and its shared state.
pub struct Running {
    /// The bound client address (useful when `listen` used port 0).
    pub addr: SocketAddr,
    /// Shared state, for inspection.
    pub shared: Arc<Shared>,
}

fn bind(listen: &str) -> anyhow::Result<std::net::TcpListener> {
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

fn spawn_worker(
    index: usize,
    shared: Arc<Shared>,
) -> anyhow::Result<mpsc::UnboundedSender<(std::net::TcpStream, u64)>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(std::net::TcpStream, u64)>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a worker runtime")?;
    std::thread::Builder::new()
        .name(format!("slotproxy-w{index}"))
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            let worker = Worker::new(index, shared);
            local.block_on(&rt, async move {
                while let Some((std_stream, id)) = rx.recv().await {
                    let stream = match tokio::net::TcpStream::from_std(std_stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not register a client socket");
                            worker.shared.workers[index].clients.fetch_sub(1, Relaxed);
                            continue;
                        }
                    };
                    tokio::task::spawn_local(session::serve(
                        std::rc::Rc::clone(&worker),
                        stream,
                        id,
                    ));
                }
            });
        })
        .context("spawning a worker thread")?;
    Ok(tx)
}

/// Starts the proxy on the current (multi-thread or current-thread) tokio runtime and serves
/// until `shutdown` completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    config.validate()?;
    let std_listener = bind(&config.listen)?;
    let addr = std_listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let workers = config.worker_count();
    let shared = Arc::new(Shared::new(config, workers, addr.port()));
    let senders = (0..workers)
        .map(|i| spawn_worker(i, Arc::clone(&shared)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tokio::spawn(topology::run(Arc::clone(&shared)));
    tracing::info!(%addr, workers, seeds = ?shared.config.seeds, "slotproxy listening");
    on_ready(&Running {
        addr,
        shared: Arc::clone(&shared),
    });
    tokio::pin!(shutdown);
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: keep serving the clients we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if shared.client_count() >= shared.config.max_clients {
            shared.rejected_clients.fetch_add(1, Relaxed);
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (index, _) = shared
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.clients.load(Relaxed))
            .unwrap_or((0, &shared.workers[0]));
        let stats = &shared.workers[index];
        stats.clients.fetch_add(1, Relaxed);
        stats.accepted.fetch_add(1, Relaxed);
        let id = shared.next_client_id.fetch_add(1, Relaxed);
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                stats.clients.fetch_sub(1, Relaxed);
                tracing::warn!(%peer, error = %e, "could not hand a client to a worker");
                continue;
            }
        };
        if senders[index].send((std_stream, id)).is_err() {
            stats.clients.fetch_sub(1, Relaxed);
            tracing::error!(worker = index, "worker thread is gone");
        }
    }
    tracing::info!("slotproxy stopping");
    Ok(())
}
