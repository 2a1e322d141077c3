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

    /// Largest request head accepted, in bytes; larger ones get 431.
    #[arg(long, env = "METEOR_PROXY_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// How long a removed or terminating backend keeps its existing sessions.
    #[arg(long, env = "METEOR_PROXY_DRAIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long sessions may finish after SIGTERM before the proxy exits.
    #[arg(long, env = "METEOR_PROXY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Most client connections open at once; more are closed at once (and counted), so a
    /// flood cannot exhaust file descriptors. 0: half the descriptor limit (each client
    /// connection may need a backend connection too), less a reserve.
    #[arg(long, env = "METEOR_PROXY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

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
    pub fn rebalancing(&self) -> Option<crate::rebalance::Settings> {
        (self.rebalance_rate > 0.0).then(|| crate::rebalance::Settings {
            rate: self.rebalance_rate,
            tolerance: f64::from(self.rebalance_tolerance) / 100.0,
        })
    }

    /// Whether the sticky cookie carries the `Secure` attribute.
    pub fn cookie_is_secure(&self) -> bool {
        self.cookie_secure || self.tls_cert.is_some()
    }

    /// `--max-connections`, or with 0 the default from the open-files limit.
    pub fn connection_limit(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        let files = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
            0 => usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX),
            _ => 1024,
        };
        (files.saturating_sub(RESERVED_FILES) / 2).clamp(1, 1_000_000)
    }
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
