//! Workers and listeners: one thread per worker, each with a current-thread tokio runtime, its own
//! `SO_REUSEPORT` listeners and its own upstream pools. Nothing on the request path is shared
//! between workers except the config snapshot (read through `ArcSwap`).
//!
//! Shutdown is graceful: listeners close at once (new connections are refused), idle keep-alive
//! connections close, in-flight requests finish, and whatever is still running after the drain
//! timeout is dropped.

pub mod conn;
pub mod drain;
pub mod h1;
pub mod listener;
pub mod timed_io;
pub mod tls;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::observability::errlog;
use crate::proxy::{Shared, WorkerCtx};

/// One listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    /// Accept HTTP/2 with prior knowledge besides HTTP/1.1 (on TLS listeners: offer `h2` by
    /// ALPN).
    pub http2: bool,
    /// A TLS listener (`apisix.ssl.listen`): certificates come from the snapshot's `ssls`.
    pub tls: bool,
    /// What its requests get.
    pub serves: Serves,
}

/// What a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// The gateway: routes, plugins, upstreams (`apisix.node_listen`).
    Proxy,
    /// The control API only (`apisix.control`), see `proxy::control`.
    Control,
    /// The prometheus plugin's metrics only (`plugin_attr.prometheus.export_addr`), see
    /// `proxy::metrics_export`.
    PrometheusExport,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind() to {addr} failed ({source})")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("failed to start worker {id}: {source}")]
    Worker { id: usize, source: std::io::Error },
}

/// Running workers.
pub struct Server {
    threads: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

const BACKLOG: i32 = 511;

impl Server {
    /// Binds every address for every worker, then starts the workers. Fails before starting
    /// anything when an address cannot be bound.
    pub fn start(
        specs: &[ListenSpec],
        workers: usize,
        shared: Arc<Shared>,
        drain: Duration,
    ) -> Result<Server, ServerError> {
        for s in specs {
            listener::probe_free(s.addr).map_err(|source| ServerError::Bind {
                addr: s.addr,
                source,
            })?;
        }
        let mut per_worker = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut ls = Vec::with_capacity(specs.len());
            for s in specs {
                let l = listener::bind_reuseport(s.addr, BACKLOG).map_err(|source| {
                    ServerError::Bind {
                        addr: s.addr,
                        source,
                    }
                })?;
                ls.push((l, *s));
            }
            per_worker.push(ls);
        }
        let (tx, rx) = watch::channel(false);
        let mut threads = Vec::with_capacity(workers);
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let shared = shared.clone();
            let rx = rx.clone();
            let t = std::thread::Builder::new()
                .name(format!("moongate-worker-{id}"))
                // Lua code and encoders recurse (cjson nests to 1,000 levels): give workers the
                // 8 MiB an nginx worker's main thread has, not a spawned thread's 2 MiB.
                .stack_size(8 << 20)
                .spawn(move || worker_thread(id, listeners, shared, rx, drain))
                .map_err(|source| ServerError::Worker { id, source })?;
            threads.push(t);
        }
        Ok(Server {
            threads,
            shutdown: tx,
        })
    }

    /// Stops accepting, drains, and waits for every worker to finish.
    pub fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn worker_thread(
    id: usize,
    listeners: Vec<(std::net::TcpListener, ListenSpec)>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    errlog::set_worker_id(id + 1);
    // A local runtime runs `!Send` tasks (Lua later) without a `LocalSet` queue in between.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build_local(tokio::runtime::LocalOptions::default())
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("worker {id}: failed to build its runtime: {e}");
            return;
        }
    };
    rt.block_on(worker_main(id, listeners, shared, shutdown, drain));
}

async fn worker_main(
    id: usize,
    listeners: Vec<(std::net::TcpListener, ListenSpec)>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let ctx = match WorkerCtx::new(id, shared) {
        Ok(c) => Rc::new(c),
        Err(e) => {
            log::error!("worker {id}: {e}");
            return;
        }
    };
    let active = Rc::new(Cell::new(0usize));
    let closing = Rc::new(drain::Drain::default());
    for (l, spec) in listeners {
        let listener = match TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                log::error!("worker {id}: cannot use listener: {e}");
                continue;
            }
        };
        tokio::task::spawn_local(accept_loop(
            listener,
            spec,
            ctx.clone(),
            active.clone(),
            shutdown.clone(),
            closing.clone(),
        ));
    }
    let ticker = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            let mut every = tokio::time::interval(crate::observability::access::FLUSH_INTERVAL);
            loop {
                every.tick().await;
                ctx.tick();
            }
        })
    };
    let _ = shutdown.wait_for(|s| *s).await;
    closing.stop();
    let deadline = tokio::time::Instant::now() + drain;
    while active.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if active.get() > 0 {
        log::warn!(
            "worker {id}: {} connections still open after the drain timeout; closing them",
            active.get()
        );
    }
    ticker.abort();
    ctx.tick();
}

async fn accept_loop(
    listener: TcpListener,
    spec: ListenSpec,
    ctx: Rc<WorkerCtx>,
    active: Rc<Cell<usize>>,
    shutdown: watch::Receiver<bool>,
    drain: Rc<drain::Drain>,
) {
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    active.set(active.get() + 1);
                    let (ctx, active, shutdown, drain) =
                        (ctx.clone(), active.clone(), shutdown.clone(), drain.clone());
                    let counted = crate::observability::metrics::conn::ConnGuard::open();
                    tokio::task::spawn_local(async move {
                        let _counted = counted;
                        conn::serve(stream, peer, spec, ctx, shutdown, drain).await;
                        active.set(active.get() - 1);
                    });
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    log::error!("accept() failed ({e})");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}
