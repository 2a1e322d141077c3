//! The Meteor-aware sticky load balancer: the `meteor-proxy` crate, run as `meteor-operator proxy`.
//!
//! Modules by layer, lowest first. A module imports only from its own layer or a lower one, and
//! the imports form no circle; `#[cfg(test)]` code may use any layer as its harness
//! (`tests/layers.rs` reads this list and checks both rules):
//! 0. Parts, knowing nothing of backends: [`bounded`] (size caps of the pin and rate-limit
//!    maps), [`client`] (the client address the proxy trusts, `--trusted-hops`, IPv6 by /64, the
//!    per-client connection cap), [`closing`] (WebSocket closes spread over drain and shutdown
//!    windows), [`cookie`] (the signed sticky cookie), [`metrics`] (the Prometheus families),
//!    [`pool`] (a backend's idle keep-alive connections), [`ratelimit`] (per-client 429s),
//!    [`sockjs`] (SockJS session ids from URLs).
//! 1. Data, free of I/O: [`backend`] (one backend and its state: readiness, rise/fall health,
//!    open tunnels), [`balancer`] (the backend set, least-connections picks, SockJS pins).
//! 2. I/O and tasks: [`config`] (flags and `METEOR_PROXY_*` environment variables),
//!    [`deadline`] (client head and write deadlines), [`discovery`] (where backends come from),
//!    [`health`] (the active checker), [`rebalance`] (WebSockets moved onto new backends after a
//!    scale-up), [`tls`] (TLS termination), [`tunnel`] (WebSocket byte tunnels), [`upstream`]
//!    (HTTP/1.1 exchanges with backends).
//! 3. Traffic: [`server`] (the accept loop and the path of every request).
//! 4. Wiring: [`admin`] (status page and `/metrics`), [`replay`] (one client connection from
//!    bytes in memory, the fuzz target's harness), and this file.
//!
//! Doc comments follow the same direction: a module names a higher one in plain text
//! (`rebalance`), never as a `crate::`/`super::` link, so even a plain text search for those
//! paths finds no circle.
//!
//! `run` wires them: discovery feeds the balancer (starting health checks for new backends and
//! drain timers for leaving ones), the server routes with it, SIGTERM drains everything.

pub mod admin;
pub mod backend;
pub mod balancer;
pub mod bounded;
pub mod client;
pub mod closing;
pub mod config;
pub mod cookie;
pub mod deadline;
pub mod discovery;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod ratelimit;
pub mod rebalance;
pub mod replay;
pub mod server;
pub mod sockjs;
pub mod tls;
pub mod tunnel;
pub mod upstream;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;

use backend::{Backend, BackendSpec};
use balancer::Balancer;
pub use config::ProxyArgs;

/// Runs the proxy until SIGTERM (or Ctrl-C), on its own runtime with `--threads` workers.
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    // Before any cap is derived from it: container runtimes often start processes with a soft
    // limit of 1024 under a hard one far above.
    let (before, after) = config::raise_open_files_limit();
    if after.soft > before.soft {
        tracing::info!(
            from = before.soft,
            to = after.soft,
            hard = after.hard,
            "raised the open-files limit"
        );
    }
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // The caller's runtime is not ours to size: serve on a dedicated one and wait for it.
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("meteor-proxy".into())
        .spawn(move || {
            let runtime = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
            };
            let outcome = match runtime {
                Ok(runtime) => runtime.block_on(serve(args)),
                Err(error) => Err(error.into()),
            };
            let _ = done.send(outcome);
        })?;
    result
        .await
        .context("the proxy runtime stopped unexpectedly")?
}

async fn serve(args: ProxyArgs) -> anyhow::Result<()> {
    let sources = usize::from(!args.backends.is_empty())
        + usize::from(args.backends_file.is_some())
        + usize::from(args.service.is_some());
    anyhow::ensure!(
        sources == 1,
        "give exactly one backend source: --backend, --backends-file or --service"
    );
    let metrics = Arc::new(metrics::Metrics::default());
    let mut balancer = Balancer::new(args.health_rise, args.health_fall, metrics.clone());
    if let Some(settings) = args.rebalancing() {
        balancer = balancer.with_rebalancing(settings);
        tracing::info!(
            rate = settings.rate,
            tolerance = settings.tolerance,
            "rebalancing on"
        );
    }
    let balancer = Arc::new(balancer);
    let key = cookie_key(&args)?;
    let signer = cookie::CookieSigner::new(&key, args.cookie_max_age);

    let checks = health::CheckSettings {
        path: args.health_path.clone(),
        interval: args.health_interval,
        timeout: args.health_timeout,
    };
    let drain = args.drain_timeout;
    let apply = {
        let balancer = balancer.clone();
        move |specs: Vec<BackendSpec>| apply_backends(&balancer, &specs, &checks, drain)
    };
    if !args.backends.is_empty() {
        let specs = args
            .backends
            .iter()
            .map(|b| discovery::parse_backend(b))
            .collect::<Result<Vec<_>, _>>()?;
        apply(specs);
    } else if let Some(path) = args.backends_file.clone() {
        tokio::spawn(discovery::watch_file(
            path,
            Duration::from_millis(500),
            apply,
        ));
    } else if let Some(service) = args.service.clone() {
        let port = args.service_port.clone();
        tokio::spawn(async move {
            if let Err(error) = discovery::watch_service(&service, port.as_deref(), apply).await {
                tracing::error!(%error, "EndpointSlice discovery stopped");
            }
        });
    }

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = tls::ReloadingAcceptor::new(cert.clone(), key.clone())?;
            tokio::spawn(acceptor.clone().watch(Duration::from_secs(5)));
            Some(acceptor)
        }
        _ => None,
    };
    let limiter = (args.rate_limit > 0.0)
        .then(|| ratelimit::RateLimiter::new(args.rate_limit, args.rate_burst));
    let settings = server::Settings::from_args(&args, tls.is_some());
    let caps = args.connection_caps();
    tracing::info!(
        max_connections = settings.max_connections,
        per_client = settings.max_connections_per_client,
        stalled = settings.max_stalled,
        by_memory = ?caps.by_memory,
        by_files = caps.by_files,
        memory_limit = ?args.memory_limit_bytes.or_else(config::cgroup_memory_limit),
        open_files = config::open_files_limit().soft,
        trusted_hops = args.trusted_hops,
        "connection caps"
    );
    let proxy = Arc::new(server::Proxy::new(
        balancer.clone(),
        signer,
        settings,
        limiter,
        metrics.clone(),
    ));
    tokio::spawn(housekeeping(balancer.clone(), proxy.clone()));
    if let Some(settings) = balancer.rebalance {
        tokio::spawn(rebalance::run(balancer.clone(), settings));
    }

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin = Arc::new(admin::Admin {
        balancer: balancer.clone(),
        registry: admin::registry(&metrics, balancer.clone()),
        shutdown: proxy.shutdown.clone(),
    });
    tokio::spawn(admin.serve(admin_listener));
    if let Some(addr) = args.redirect_listen {
        anyhow::ensure!(
            tls.is_some(),
            "--redirect-listen needs --tls-cert and --tls-key"
        );
        let redirect = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(redirect = %redirect.local_addr()?, "redirecting HTTP to HTTPS");
        tokio::spawn(server::serve_redirect(redirect, proxy.shutdown.clone()));
    }
    // The bound addresses (port 0 picks a free one, which tests and benchmarks rely on).
    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin_addr,
        tls = tls.is_some(),
        "proxy serving"
    );
    let accept = tokio::spawn(proxy.clone().serve(listener, tls));

    terminated().await?;
    tracing::info!(deadline = ?args.shutdown_timeout, "shutting down: no new connections");
    proxy.begin_shutdown(args.shutdown_timeout);
    let _ = accept.await;
    proxy.tracker.close();
    if tokio::time::timeout(args.shutdown_timeout, proxy.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed; closing the remaining sessions");
        proxy.hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), proxy.tracker.wait()).await;
    }
    Ok(())
}

/// Merges a discovered list, starting checks for new backends and drains for leaving ones.
fn apply_backends(
    balancer: &Arc<Balancer>,
    specs: &[BackendSpec],
    checks: &health::CheckSettings,
    drain: Duration,
) {
    let changes = balancer.update(specs);
    for backend in changes.added {
        tracing::info!(backend = %backend.id, "backend added");
        tokio::spawn(health::run_checker(backend, checks.clone()));
    }
    for backend in changes.draining {
        tracing::info!(backend = %backend.id, "backend draining");
        tokio::spawn(drain_backend(balancer.clone(), backend, drain));
    }
}

/// How long a leaving backend may sit without any open request or WebSocket before its drain
/// ends early. SockJS clients keep a receiving request open almost all the time, so a quiet
/// backend has no live sessions left; a short gap between two polls must not end the drain.
const DRAIN_QUIET: Duration = Duration::from_secs(5);

/// Lets a leaving backend keep its sessions until they end or `deadline` passes, its open
/// tunnels closing one by one until then.
async fn drain_backend(balancer: Arc<Balancer>, backend: Arc<Backend>, deadline: Duration) {
    let until = backend.closing.open(deadline, backend.tunnels());
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        if !backend.is_removed() && !backend.is_terminating() {
            backend.closing.withdraw(); // it came back: its tunnels stay
            return;
        }
        let now = tokio::time::Instant::now();
        if backend.active() > 0 {
            quiet_since = now;
        }
        if now >= until || now.duration_since(quiet_since) >= DRAIN_QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    balancer.finish_drain(&backend);
    tracing::info!(backend = %backend.id, "backend drained");
}

/// Periodic cleanup of SockJS pins and rate-limit buckets.
async fn housekeeping(balancer: Arc<Balancer>, proxy: Arc<server::Proxy>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    loop {
        ticker.tick().await;
        let now = Instant::now();
        balancer.prune_pins(now.checked_sub(balancer::PIN_IDLE).unwrap_or(now));
        proxy.prune_rate_limits(now);
    }
}

/// The cookie key: the file's bytes (surrounding whitespace trimmed), or a random key.
fn cookie_key(args: &ProxyArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &args.cookie_key_file {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let key = raw.trim_ascii().to_vec();
        anyhow::ensure!(
            key.len() >= 16,
            "the cookie key in {} is shorter than 16 bytes",
            path.display()
        );
        return Ok(key);
    }
    tracing::warn!("no --cookie-key-file: using a random key, replicas will not share cookies");
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    Ok(key)
}

async fn terminated() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    Ok(())
}
