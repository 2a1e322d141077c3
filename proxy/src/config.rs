//! Configuration of `meteor-operator proxy`.
//!
//! Every flag can also be set by a `METEOR_PROXY_*` environment variable, so the operator can
//! drive the proxy from a Deployment spec without building command lines. Secrets (the cookie
//! key, the TLS certificate) are read from file paths so they can come from mounted Secrets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line configuration of the proxy (boxed: it is large, and sits in the CLI's enum).
#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub options: Box<ProxyOptions>,
}

impl ProxyArgs {
    /// Every flag at its default (and no `METEOR_PROXY_*` variable read): the in-memory
    /// harness (`replay`) and tests use the limits a deployed proxy has.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ProxyArgs,
        }
        let command = <Cli as clap::CommandFactory>::command().mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["meteor-proxy"]);
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
            .expect("every flag has a default")
            .args
    }
}

impl std::ops::Deref for ProxyArgs {
    type Target = ProxyOptions;
    fn deref(&self) -> &ProxyOptions {
        &self.options
    }
}

/// Every setting of the proxy.
#[derive(clap::Args, Debug, Clone)]
pub struct ProxyOptions {
    /// Address for client traffic (plain HTTP, or HTTPS when --tls-cert is given).
    #[arg(long, env = "METEOR_PROXY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Optional plain-HTTP address that only redirects to HTTPS (needs --tls-cert).
    #[arg(long, env = "METEOR_PROXY_REDIRECT_LISTEN")]
    pub redirect_listen: Option<SocketAddr>,

    /// Address of the admin endpoints (/-/status, /-/healthz, /metrics).
    #[arg(
        long,
        env = "METEOR_PROXY_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,

    /// Worker threads (1 runs a current-thread runtime; 0 means one per CPU).
    #[arg(long, env = "METEOR_PROXY_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Static backends, `host:port`, comma separated or repeated.
    #[arg(long = "backend", env = "METEOR_PROXY_BACKENDS", value_delimiter = ',')]
    pub backends: Vec<String>,

    /// A file listing backends, one `host:port` a line (`#` comments); re-read when it changes,
    /// so a ConfigMap mount can drive the set without restarts.
    #[arg(long, env = "METEOR_PROXY_BACKENDS_FILE")]
    pub backends_file: Option<PathBuf>,

    /// Kubernetes Service whose EndpointSlices give the backends (`name` or `namespace/name`).
    #[arg(long, env = "METEOR_PROXY_SERVICE")]
    pub service: Option<String>,

    /// Port name (or number) of the Service's EndpointSlice port to use; default: the first.
    #[arg(long, env = "METEOR_PROXY_SERVICE_PORT")]
    pub service_port: Option<String>,

    /// Name of the sticky cookie.
    #[arg(
        long,
        env = "METEOR_PROXY_COOKIE_NAME",
        default_value = "meteor-sticky"
    )]
    pub cookie_name: String,

    /// File holding the HMAC key that signs the sticky cookie (share it between replicas).
    /// Without it a random key is generated, so replicas would not accept each other's cookies.
    #[arg(long, env = "METEOR_PROXY_COOKIE_KEY_FILE")]
    pub cookie_key_file: Option<PathBuf>,

    /// How long a sticky cookie stays valid, in seconds.
    #[arg(long, env = "METEOR_PROXY_COOKIE_MAX_AGE", default_value_t = 86_400)]
    pub cookie_max_age: u64,

    /// Mark the sticky cookie `Secure` (default: only when terminating TLS).
    #[arg(long, env = "METEOR_PROXY_COOKIE_SECURE")]
    pub cookie_secure: bool,

    /// HTTP path probed by active health checks; empty disables active checks.
    #[arg(long, env = "METEOR_PROXY_HEALTH_PATH", default_value = "/")]
    pub health_path: String,

    /// Interval between active health checks.
    #[arg(long, env = "METEOR_PROXY_HEALTH_INTERVAL", default_value = "750ms", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// Timeout of one active health check.
    #[arg(long, env = "METEOR_PROXY_HEALTH_TIMEOUT", default_value = "1000ms", value_parser = parse_duration)]
    pub health_timeout: Duration,

    /// Consecutive successful checks that bring a backend up.
    #[arg(long, env = "METEOR_PROXY_HEALTH_RISE", default_value_t = 2)]
    pub health_rise: u32,

    /// Consecutive failed checks (or upstream connect failures) that take a backend down.
    #[arg(long, env = "METEOR_PROXY_HEALTH_FALL", default_value_t = 2)]
    pub health_fall: u32,

    /// Idle timeout: of a silent WebSocket tunnel, of the wait for a response head (from the
    /// request's start, its upload included) and of a backend's silence inside a response body.
    /// Must stay well above Meteor's 60 s SockJS disconnect delay.
    #[arg(long, env = "METEOR_PROXY_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Timeout to connect to a backend.
    #[arg(long, env = "METEOR_PROXY_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How long an idle pooled connection to a backend is kept: below the backend's own
    /// keep-alive timeout (Node's default is 5 s), so it is never closed under a request.
    #[arg(long, env = "METEOR_PROXY_UPSTREAM_IDLE_TIMEOUT", default_value = "4s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,

    /// Time a client gets to send the request headers (slow clients are cut off).
    #[arg(long, env = "METEOR_PROXY_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// How long a write to a client may wait: a client that stops reading its response is
    /// disconnected after this, freeing the backend connection it held.
    #[arg(long, env = "METEOR_PROXY_WRITE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Largest request head accepted, in bytes; larger ones get 431. The default is Node's own
    /// limit (`--max-http-header-size`, 16 KiB), so Meteor would refuse a larger one anyway; it
    /// also bounds what a slow client's unfinished head holds.
    #[arg(long, env = "METEOR_PROXY_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// How long a removed or terminating backend keeps its existing sessions.
    #[arg(long, env = "METEOR_PROXY_DRAIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long sessions may finish after SIGTERM before the proxy exits.
    #[arg(long, env = "METEOR_PROXY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Most client connections open at once; more are closed at once (and counted), so a
    /// flood can exhaust neither memory nor file descriptors. 0: derived from the memory limit
    /// (`--memory-limit-bytes`) and the descriptor limit, whichever allows fewer.
    #[arg(long, env = "METEOR_PROXY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Most connections open at once from one client address (an IPv6 /64 counts as one): the
    /// TCP peer, or with `--trusted-hops` the WebSockets of the client address the edge
    /// reported. 0: no cap.
    #[arg(
        long,
        env = "METEOR_PROXY_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 256
    )]
    pub max_connections_per_client: usize,

    /// Memory the proxy may use, in bytes (its container's memory limit: the operator passes
    /// `limits.memory` through the downward API). The default connection cap is derived from
    /// it. Default: the cgroup's memory limit, if there is one.
    #[arg(long, env = "METEOR_PROXY_MEMORY_LIMIT_BYTES")]
    pub memory_limit_bytes: Option<u64>,

    /// Proxies in front of this one (an Ingress controller or a Gateway: 1) whose
    /// `X-Forwarded-For` elements, `X-Forwarded-Proto` and `X-Forwarded-Host` are believed: the
    /// client address for the rate limit and the per-client cap is the element this many places
    /// from the right. 0 (nothing in front): whatever a client sends in them is replaced.
    /// Keep it at the app's `HTTP_FORWARDED_COUNT` less one.
    #[arg(long, env = "METEOR_PROXY_TRUSTED_HOPS", default_value_t = 0)]
    pub trusted_hops: u32,

    /// PEM certificate chain; enables TLS termination on --listen. Reloaded when it changes.
    #[arg(long, env = "METEOR_PROXY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, env = "METEOR_PROXY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Requests per second allowed per client IP (0 disables rate limiting); excess gets 429.
    #[arg(long, env = "METEOR_PROXY_RATE_LIMIT", default_value_t = 0.0)]
    pub rate_limit: f64,

    /// Burst size of the per-client-IP rate limit.
    #[arg(long, env = "METEOR_PROXY_RATE_BURST", default_value_t = 100)]
    pub rate_burst: u32,

    /// WebSockets this replica closes per second at most to move sessions onto backends that
    /// hold fewer (after a scale-up); 0 turns rebalancing off.
    #[arg(long, env = "METEOR_PROXY_REBALANCE_RATE", default_value_t = 5.0, value_parser = parse_rate)]
    pub rebalance_rate: f64,

    /// How far above the mean, in percent, a backend's open WebSockets may be before some are
    /// moved.
    #[arg(long, env = "METEOR_PROXY_REBALANCE_TOLERANCE", default_value_t = 20)]
    pub rebalance_tolerance: u32,
}

impl ProxyOptions {
    /// Rebalancing settings, unless `--rebalance-rate` is 0.
    pub fn rebalancing(&self) -> Option<crate::balancer::Rebalancing> {
        (self.rebalance_rate > 0.0).then(|| crate::balancer::Rebalancing {
            rate: self.rebalance_rate,
            tolerance: f64::from(self.rebalance_tolerance) / 100.0,
        })
    }

    /// Whether the sticky cookie carries the `Secure` attribute.
    pub fn cookie_is_secure(&self) -> bool {
        self.cookie_secure || self.tls_cert.is_some()
    }

    /// The connection caps: `--max-connections`, or with 0 the fewer of what the memory limit
    /// and the open-files limit allow.
    pub fn connection_caps(&self) -> Caps {
        let files = open_files_limit().soft;
        let memory = self.memory_limit_bytes.or_else(cgroup_memory_limit);
        caps(self.max_connections, files, memory, self.max_header_bytes)
    }

    /// `--max-connections`, or with 0 its default ([`Self::connection_caps`]).
    pub fn connection_limit(&self) -> usize {
        self.connection_caps().connections
    }
}

/// Connection caps and where they came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Client connections open at once.
    pub connections: usize,
    /// Client connections whose response is stalled (a write waiting for the client to read)
    /// at once; one more stalling is closed ([`crate::deadline::StallBudget`]).
    pub stalled: usize,
    /// What the memory limit allows (None: no limit known).
    pub by_memory: Option<usize>,
    /// What the open-files limit allows.
    pub by_files: usize,
}

/// Memory a client connection holds whatever it does, in bytes: its task, timers and state,
/// hyper's 8 KiB write buffer, and the kernel's socket (about 3.7 KiB of slab). Measured with
/// the head below: 22.3 KB of the proxy's memory for an unfinished head of 200 bytes, plus the
/// kernel's (`docs/proxy.md`, "Bounded resources").
pub const CONNECTION_FIXED_BYTES: u64 = 16 * 1024;
/// hyper's read buffer per byte of `--max-header-bytes`: an unfinished head of just under the
/// limit (the costliest state a client can cause without spending memory of its own) grows it
/// up to the limit, in steps. Measured: 30.0 KB for a 15.5 KiB head under the 16 KiB default,
/// 50.1 KB for 31.5 KiB under 32 KiB, each plus the kernel's 3.7 KiB.
pub const HEAD_BUFFER_FACTOR: f64 = 1.25;
/// Memory of a stalled response (its client stopped reading): the response's buffers in hyper
/// and in the backend connection, the kernel's queues of the client socket (the window in
/// flight, plus 16 KiB unsent: `TCP_NOTSENT_LOWAT`) and of the backend socket (a 64 KiB receive
/// buffer, which the kernel lets reach twice that). Measured 61 KB of the proxy's memory and
/// 150 KB of socket queues per stalled response, on loopback with a client window of 4 KiB.
pub const STALLED_BYTES: u64 = 256 * 1024;
/// One in this many connections may have a stalled response at once; one more stalling is
/// closed.
pub const STALLED_SHARE: usize = 8;
/// Memory for everything but connections: the runtime, the SockJS pins and rate-limit buckets
/// (100,000 each at most), metrics, TLS, and the allocator's slack.
pub const BASE_BYTES: u64 = 32 << 20;

/// Memory one client connection is budgeted, with `max_header_bytes` heads: its own worst case
/// and its share of the stalled responses.
pub fn connection_bytes(max_header_bytes: usize) -> u64 {
    let head = (max_header_bytes as f64 * HEAD_BUFFER_FACTOR) as u64;
    CONNECTION_FIXED_BYTES + head + STALLED_BYTES / STALLED_SHARE as u64
}

/// The caps from `--max-connections` (0: derived), the soft open-files limit, the memory limit
/// and `--max-header-bytes`.
pub fn caps(
    max_connections: usize,
    files: u64,
    memory: Option<u64>,
    max_header_bytes: usize,
) -> Caps {
    let files = usize::try_from(files).unwrap_or(usize::MAX);
    // Each client connection may need a backend connection too.
    let by_files = (files.saturating_sub(RESERVED_FILES) / 2).clamp(1, 1_000_000);
    // Three quarters of the limit: a margin below the OOM killer for what the figures above do
    // not hold (the kernel's queues beyond them, bursts of connections closing).
    let by_memory = memory.map(|limit| {
        let budget = (limit / 4 * 3).saturating_sub(BASE_BYTES);
        usize::try_from(budget / connection_bytes(max_header_bytes))
            .unwrap_or(usize::MAX)
            .clamp(1, 1_000_000)
    });
    let connections = match max_connections {
        0 => by_memory.map_or(by_files, |m| m.min(by_files)),
        n => n,
    };
    Caps {
        connections,
        stalled: (connections / STALLED_SHARE).max(16),
        by_memory,
        by_files,
    }
}

/// The soft and hard open-files limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimits {
    pub soft: u64,
    pub hard: u64,
}

/// The open-files limits now (1024 for both if they cannot be read).
pub fn open_files_limit() -> FileLimits {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => FileLimits {
            soft: limit.rlim_cur,
            hard: limit.rlim_max,
        },
        _ => FileLimits {
            soft: 1024,
            hard: 1024,
        },
    }
}

/// Raises the soft open-files limit to the hard one (container runtimes often start processes
/// with a soft limit of 1024 and a hard one far above), at most to the kernel's `nr_open`.
/// Returns the limits before and after.
pub fn raise_open_files_limit() -> (FileLimits, FileLimits) {
    let before = open_files_limit();
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let target = before.hard.min(nr_open);
    if target > before.soft {
        let limit = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: before.hard as libc::rlim_t,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
    (before, open_files_limit())
}

/// The memory limit of the proxy's cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`), if
/// it has one.
pub fn cgroup_memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| text.trim().parse::<u64>().ok())
    // "max", or v1's "no limit" (a page-rounded i64::MAX).
    .filter(|&limit| limit < 1 << 60)
}

/// Descriptors kept for listeners, health checks, discovery and logs.
const RESERVED_FILES: usize = 100;

/// A rate per second: 0 (off) up to 10,000.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=10_000.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "not a rate between 0 and 10000 per second: {text:?}"
        )),
    }
}

/// Parses `750ms`, `2s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown duration unit in {text:?} (use ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProxyArgs,
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("750ms"), Ok(Duration::from_millis(750)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_match_the_seeds() {
        let cli = Cli::parse_from(["proxy", "--backend", "127.0.0.1:1,127.0.0.1:2"]);
        let a = cli.args;
        assert_eq!(a.backends, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(a.health_interval, Duration::from_millis(750));
        assert_eq!(a.health_timeout, Duration::from_millis(1000));
        assert_eq!((a.health_rise, a.health_fall), (2, 2));
        assert!(a.idle_timeout > Duration::from_secs(60));
        assert!(!a.cookie_is_secure());
        assert!(a.connection_limit() >= 1);
        let rebalancing = a.rebalancing().unwrap();
        assert_eq!((rebalancing.rate, rebalancing.tolerance), (5.0, 0.2));
    }

    /// Issue 18, item 4: the cap follows the memory limit (the operator's default 256Mi gives
    /// 2,409 connections, of which 301 may stall), not the open-files limit alone (524,288 on
    /// common runtimes gave 262,094); `--max-connections` still overrides both.
    #[test]
    fn the_connection_cap_follows_the_memory_limit() {
        const MI: u64 = 1 << 20;
        let default = caps(0, 524_288, Some(256 * MI), 16 * 1024);
        assert_eq!(default.by_files, 262_094);
        assert_eq!(default.by_memory, Some(2409));
        assert_eq!((default.connections, default.stalled), (2409, 301));
        // Every connection at its worst stays inside three quarters of the limit.
        let worst = BASE_BYTES + default.connections as u64 * connection_bytes(16 * 1024);
        assert!(worst <= 192 * MI, "{worst}");
        // More memory, more connections; larger heads, fewer.
        assert_eq!(
            caps(0, 524_288, Some(1024 * MI), 16 * 1024).connections,
            11_083
        );
        assert_eq!(
            caps(0, 524_288, Some(256 * MI), 32 * 1024).connections,
            1861
        );
        // No limit known: the files alone; few files: the files.
        assert_eq!(caps(0, 1024, None, 16 * 1024).connections, 462);
        assert_eq!(caps(0, 1024, Some(256 * MI), 16 * 1024).connections, 462);
        // A limit below the base still serves someone.
        assert_eq!(caps(0, 524_288, Some(16 * MI), 16 * 1024).connections, 1);
        // The override.
        let forced = caps(50_000, 1024, Some(256 * MI), 16 * 1024);
        assert_eq!((forced.connections, forced.stalled), (50_000, 6250));
        let cli = Cli::parse_from([
            "proxy",
            "--backend",
            "127.0.0.1:1",
            "--memory-limit-bytes",
            "268435456",
            "--max-connections",
            "7",
        ]);
        assert_eq!(cli.args.connection_limit(), 7);
        let cli = Cli::parse_from([
            "proxy",
            "--backend",
            "127.0.0.1:1",
            "--memory-limit-bytes",
            "268435456",
        ]);
        assert!(cli.args.connection_limit() <= 2409);
        assert_eq!(cli.args.max_connections_per_client, 256);
        assert_eq!(cli.args.trusted_hops, 0);
    }

    #[test]
    fn the_soft_open_files_limit_goes_up_to_the_hard_one() {
        let (before, after) = raise_open_files_limit();
        assert!(after.soft >= before.soft);
        assert_eq!(after.hard, before.hard);
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .map_or(1 << 20, |s| s.trim().parse().unwrap());
        assert_eq!(after.soft, after.hard.min(nr_open));
    }

    #[test]
    fn rebalancing_turns_off_at_rate_zero_and_refuses_nonsense() {
        let parse = |rate: &str| {
            Cli::try_parse_from([
                "proxy",
                "--backend",
                "127.0.0.1:1",
                "--rebalance-rate",
                rate,
            ])
            .map(|cli| cli.args.rebalancing())
        };
        assert_eq!(parse("0").unwrap(), None);
        assert_eq!(parse("0.5").unwrap().unwrap().rate, 0.5);
        for bad in ["-1", "NaN", "inf", "fast"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
