//! Start-up and the accept loop: worker threads, balanced hand-off of new clients, the
//! topology refresher, and shutdown.
//!
//! One acceptor hands each new socket to the worker with the fewest clients, so a burst of
//! connections cannot pile onto one thread (the skew Envoy's users hit with unbalanced
//! accepts). Workers run a current-thread runtime each and never hand work to each other.

use crate::backend::worker::Worker;
use crate::cluster::topology;
use crate::config::Config;
use crate::local_notify::LocalNotify;
use crate::session;
use crate::shared::{ClientSeat, Shared};
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

/// A worker thread: where to hand it clients, and its handle to wait for it at shutdown.
struct WorkerThread {
    tx: mpsc::UnboundedSender<NewClient>,
    thread: std::thread::JoinHandle<()>,
}

/// A client socket handed to a worker: its ID, whether it came in on the TLS listener, and its
/// seat in the worker's client count (given up when the client is gone, wherever that happens).
type NewClient = (std::net::TcpStream, u64, bool, ClientSeat);

/// How often a worker drops the spare buffers its sessions did not need.
const TRIM_SPARES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A worker's housekeeping: once a second, drops the spare read buffers and per-request sets
/// ([`session::scratch`]) that no session took during the last second, and asks for the freed
/// memory to go back to the system when that was a lot. Ends with the worker.
async fn trim_spares(worker: std::rc::Weak<Worker>) {
    let mut tick = tokio::time::interval(TRIM_SPARES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(worker) = worker.upgrade() else {
            return;
        };
        let freed = worker.trim_spares();
        let sets = session::scratch::trim_unused();
        if freed >= crate::memory::TRIM_AFTER_BYTES / 4 || sets >= 16 {
            worker.shared.trimmer.request();
        }
    }
}

/// After the client channel closes: stop reading, wait for the sessions to answer what they
/// read (at most `shutdown_timeout`), then make the rest answer with an error and close (the
/// phases of [`crate::shutdown::Shutdown`]).
async fn drain(worker: &Worker) {
    worker.begin_stop();
    let timeout = worker.shared.settings.live.get().shutdown_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    while worker.session_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if worker.session_count() > 0 {
        tracing::warn!(
            worker = worker.index,
            clients = worker.session_count(),
            "shutdown_timeout passed; answering the remaining requests with an error"
        );
        worker.abort();
        // Sessions now write their last replies without waiting on backends; give them a
        // moment to do so, then the runtime drops whatever is left.
        let grace = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while worker.session_count() > 0 && tokio::time::Instant::now() < grace {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

fn spawn_worker(index: usize, shared: Arc<Shared>) -> anyhow::Result<WorkerThread> {
    let (tx, rx) = mpsc::unbounded_channel::<NewClient>();
    // The runtime is built on the worker's thread (a LocalRuntime cannot move between
    // threads); the thread reports whether that worked before it serves anyone.
    let (built_tx, built_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("slotproxy-w{index}"))
        .spawn(move || {
            let rt = match WorkerRuntime::build() {
                Ok(rt) => {
                    let _ = built_tx.send(Ok(()));
                    rt
                }
                Err(e) => {
                    let _ = built_tx.send(Err(e));
                    return;
                }
            };
            let worker = Worker::new(index, shared);
            rt.run(async move {
                tokio::task::spawn_local(trim_spares(std::rc::Rc::downgrade(&worker)));
                let done = std::rc::Rc::new(LocalNotify::new());
                tokio::task::spawn_local(take_clients(rx, worker, std::rc::Rc::clone(&done)));
                // The runtime polls this future every time it wakes (with a LocalSet, for
                // nearly every request): it must be a flag check, not a channel receive.
                done.notified().await;
            });
        })
        .context("spawning a worker thread")?;
    // A wait of a few microseconds, once per worker at start-up.
    built_rx
        .recv()
        .context("the worker thread ended before building its runtime")?
        .context("building a worker runtime")?;
    Ok(WorkerThread { tx, thread })
}

/// A worker's single-thread runtime, which runs the worker's `!Send` tasks (sessions, backend
/// connections: they share `Rc` state and take no locks).
///
/// Built with `--cfg tokio_unstable` (the repository's `.cargo/config.toml`), it is tokio's
/// `LocalRuntime`, whose scheduler runs local tasks itself. Otherwise it is a current-thread
/// runtime driving a `LocalSet`: a task woken by the I/O driver then goes through the
/// LocalSet's locked queue and wakes the LocalSet's own future, which callgrind put at 1.5%
/// of the worker's instructions per unpipelined GET and 3.5% per split MSET or pipelined GET.
/// Behaviour is the same either way.
struct WorkerRuntime {
    #[cfg(tokio_unstable)]
    rt: tokio::runtime::LocalRuntime,
    #[cfg(not(tokio_unstable))]
    rt: tokio::runtime::Runtime,
}

impl WorkerRuntime {
    /// A runtime for the calling thread.
    fn build() -> std::io::Result<WorkerRuntime> {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        #[cfg(tokio_unstable)]
        let rt = builder.build_local(tokio::runtime::LocalOptions::default())?;
        #[cfg(not(tokio_unstable))]
        let rt = builder.build()?;
        Ok(WorkerRuntime { rt })
    }

    /// Runs `main` and the tasks it spawns with `spawn_local` until `main` completes.
    fn run(self, main: impl Future<Output = ()>) {
        #[cfg(tokio_unstable)]
        self.rt.block_on(main);
        #[cfg(not(tokio_unstable))]
        tokio::task::LocalSet::new().block_on(&self.rt, main);
    }
}

/// A worker's intake: starts a session for every client the acceptor hands over, until the
/// acceptor drops its sender (shutdown); then drains the sessions and raises `done`.
async fn take_clients(
    mut rx: mpsc::UnboundedReceiver<NewClient>,
    worker: std::rc::Rc<Worker>,
    done: std::rc::Rc<LocalNotify>,
) {
    while let Some((std_stream, id, is_tls, seat)) = rx.recv().await {
        let stream = match tokio::net::TcpStream::from_std(std_stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not register a client socket");
                continue;
            }
        };
        let worker = std::rc::Rc::clone(&worker);
        // The certificates in force when the client arrived (SIGHUP may renew them).
        match worker.shared.settings.tls.acceptor().filter(|_| is_tls) {
            Some(acceptor) => {
                tokio::task::spawn_local(async move {
                    session::serve_tls(worker, stream, id, acceptor, seat).await
                });
            }
            None => {
                tokio::task::spawn_local(session::serve(
                    worker,
                    crate::net::stream::Stream::Plain(stream),
                    id,
                    seat,
                ));
            }
        }
    }
    // The acceptor dropped its sender: the proxy is shutting down.
    drain(&worker).await;
    done.notify_one();
}

/// Starts the proxy on the current (multi-thread or current-thread) tokio runtime and serves
/// until `shutdown` completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    serve_with(config, None, shutdown, on_ready).await
}

/// Re-reads the config file on every SIGHUP and applies what may change live.
#[cfg(unix)]
async fn reload_on_hup(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload by signal is off");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match shared.settings.live.reload() {
            Ok(r) => {
                let applied = &r.applied;
                tracing::info!(?applied, "SIGHUP: configuration reloaded");
                shared
                    .metrics
                    .slowlog
                    .trim(shared.settings.live.slowlog_max_len());
                if !r.needs_restart.is_empty() {
                    tracing::warn!(
                        settings = ?r.needs_restart,
                        "SIGHUP: these settings changed in the file but need a restart; the running values stay"
                    );
                }
                if !r.replaced.is_empty() {
                    tracing::warn!(
                        settings = ?r.replaced,
                        "SIGHUP: these settings changed in the file; the file's new values replace the values set at run time (CONFIG SET, PROXY CONFIG SET or a flag)"
                    );
                }
                if !r.kept.is_empty() {
                    tracing::warn!(
                        settings = ?r.kept,
                        "SIGHUP: these settings keep the values set at run time, which differ from the file's unchanged lines (PROXY CONFIG REWRITE writes them to the file)"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "SIGHUP: configuration not reloaded")
            }
        }
    }
}

/// Like [`serve`], for a configuration read from `path` (SIGHUP re-reads it and `PROXY CONFIG
/// REWRITE` writes it). Shutdown (the `shutdown` future or `PROXY SHUTDOWN`) is graceful: the
/// listener closes, every worker stops reading, answers what it read (within
/// `shutdown_timeout`) and closes its clients; then this returns.
pub async fn serve_with(
    config: Config,
    path: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    config.validate()?;
    // Read every TLS file before binding anything, so a bad one is the error reported.
    let tls = crate::net::tls::Tls::load(&config)?;
    let listeners = Listeners::bind(&config)?;
    let workers = config.worker_count();
    let reload_on_signal = path.is_some();
    let port = listeners.client.local_addr()?.port();
    let shared = Arc::new(Shared::with_path(config, path, workers, port, tls));
    run(listeners, shared, reload_on_signal, shutdown, on_ready).await
}

/// The sockets a proxy listens on, bound before anything else starts so that an address in
/// use is the error reported.
pub struct Listeners {
    /// Plain clients (`listen`).
    pub client: tokio::net::TcpListener,
    /// TLS clients (`tls_listen`), if set.
    pub tls: Option<tokio::net::TcpListener>,
    /// The Prometheus endpoint (`metrics_listen`), if set.
    pub metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds every listener `config` names (on the current tokio runtime).
    pub fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let client =
            tokio::net::TcpListener::from_std(crate::net::listener::bind(&config.listen)?)?;
        let tls = match config.tls_listen.as_str() {
            "" => None,
            tls => Some(tokio::net::TcpListener::from_std(
                crate::net::listener::bind(tls)?,
            )?),
        };
        let metrics = match config.metrics_listen.as_str() {
            "" => None,
            listen => Some(tokio::net::TcpListener::from_std(
                crate::metrics::prom::bind(listen)?,
            )?),
        };
        Ok(Listeners {
            client,
            tls,
            metrics,
        })
    }
}

/// Serves clients from `listeners` with the state in `shared` until `shutdown` completes or
/// `PROXY SHUTDOWN` is sent: starts the workers (one per [`crate::shared::Counters::workers`]
/// entry), the refresher, housekeeping and the metrics endpoint, runs the accept loop, then
/// stops gracefully. Everything it uses comes in through its arguments; with
/// `reload_on_signal`, SIGHUP re-reads the config file `shared` remembers.
pub async fn run(
    listeners: Listeners,
    shared: Arc<Shared>,
    reload_on_signal: bool,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    let Listeners {
        client: listener,
        tls: tls_listener,
        metrics: metrics_listener,
    } = listeners;
    let addr = listener.local_addr()?;
    let workers = shared.metrics.workers.len();
    let threads = (0..workers)
        .map(|i| spawn_worker(i, Arc::clone(&shared)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut background = vec![
        tokio::spawn(topology::run(Arc::clone(&shared))),
        tokio::spawn(crate::cluster::replica_poll::run(Arc::clone(&shared))),
        tokio::spawn(crate::metrics::prom::housekeeping(Arc::clone(&shared))),
        tokio::spawn(crate::memory::run(Arc::clone(&shared.trimmer))),
    ];
    if let Some(l) = metrics_listener {
        background.push(tokio::spawn(crate::metrics::scrape::serve(
            l,
            Arc::clone(&shared.metrics.exposition),
        )));
    }
    #[cfg(unix)]
    if reload_on_signal {
        background.push(tokio::spawn(reload_on_hup(Arc::clone(&shared))));
    }
    #[cfg(not(unix))]
    let _ = reload_on_signal;
    tracing::info!(%addr, tls = %shared.settings.config.tls_listen, workers, seeds = ?shared.settings.config.seeds, metrics = %shared.settings.config.metrics_listen, "slotproxy listening");
    on_ready(&Running {
        addr,
        shared: Arc::clone(&shared),
    });
    tokio::pin!(shutdown);
    loop {
        let accept_tls = async {
            match &tls_listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        let ((mut stream, peer), is_tls) = tokio::select! {
            _ = &mut shutdown => break,
            _ = shared.shutdown.wait() => break,
            r = accept_tls => match r {
                Ok(x) => (x, true),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the TLS listener");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            r = listener.accept() => match r {
                Ok(x) => (x, false),
                Err(e) => {
                    // EMFILE and friends: keep serving the clients we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if shared.metrics.client_count() >= shared.settings.live.max_clients() {
            shared.metrics.rejected_clients.fetch_add(1, Relaxed);
            // A TLS client could not read a plain error: it is just closed.
            if !is_tls {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (index, _) = shared
            .metrics
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.clients())
            .unwrap_or((0, &shared.metrics.workers[0]));
        // Counted from here on; every path that loses the client drops the seat with it.
        let seat = ClientSeat::take(&shared, index);
        shared.metrics.workers[index].accepted.fetch_add(1, Relaxed);
        let id = shared.registries.next_client_id.fetch_add(1, Relaxed);
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "could not hand a client to a worker");
                continue;
            }
        };
        if threads[index]
            .tx
            .send((std_stream, id, is_tls, seat))
            .is_err()
        {
            tracing::error!(worker = index, "worker thread is gone");
        }
    }
    // Graceful stop: no new clients; each worker drains its own (see `drain`).
    drop(listener);
    drop(tls_listener);
    shared.shutdown.stop();
    tracing::info!(
        clients = shared.metrics.client_count(),
        timeout = ?shared.settings.live.get().shutdown_timeout,
        "slotproxy stopping: finishing in-flight requests"
    );
    let handles: Vec<_> = threads
        .into_iter()
        .map(|t| {
            drop(t.tx);
            t.thread
        })
        .collect();
    let joined = tokio::task::spawn_blocking(move || {
        // Join every thread (no short-circuit), then report whether all ended cleanly.
        handles
            .into_iter()
            .map(|h| h.join().is_ok())
            .collect::<Vec<_>>()
            .into_iter()
            .all(|ok| ok)
    })
    .await
    .unwrap_or(false);
    for task in background {
        task.abort();
    }
    if !joined {
        anyhow::bail!("a worker thread panicked during shutdown");
    }
    tracing::info!("slotproxy stopped");
    Ok(())
}
