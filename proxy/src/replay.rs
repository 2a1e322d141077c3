//! Serves one client connection from bytes in memory: the harness of the fuzz target
//! (`proxy/fuzz`) and of the seed-corpus test below, so both run the proxy's real request path
//! (hyper's parser with the proxy's limits, the upgrade and framing checks, cookie and SockJS
//! routing, the rate limiter) with no network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::balancer::Balancer;
use super::config::ProxyArgs;
use super::cookie::CookieSigner;
use super::metrics::Metrics;
use super::ratelimit::RateLimiter;
use super::server::{Proxy, Settings};

/// A proxy with no backends (routing ends in 503) and the flags' default limits.
pub fn proxy() -> Arc<Proxy> {
    let metrics = Arc::new(Metrics::default());
    let settings = Settings::from_args(&ProxyArgs::defaults(), false);
    Arc::new(Proxy::new(
        Arc::new(Balancer::new(2, 2, metrics.clone())),
        CookieSigner::new(b"a key of sixteen bytes or more", 86_400),
        settings,
        Some(RateLimiter::new(1e9, 1_000_000)),
        metrics,
    ))
}

/// How long the client waits for more of an answer. Run on a runtime with paused time
/// (`start_paused`): it then passes as soon as the proxy has nothing left to do, at no cost.
const QUIET: Duration = Duration::from_secs(1);

/// Sends `input` as one client connection, keeps it open until the proxy has answered (and
/// closed, or gone quiet for [`QUIET`]), and returns the answer.
pub async fn replay(proxy: &Arc<Proxy>, input: &[u8]) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer = SocketAddr::from(([192, 0, 2, 1], 40_000));
    let serving = tokio::spawn(proxy.clone().serve_connection(server, peer));
    let (mut reader, mut writer) = tokio::io::split(client);
    let mut answer = Vec::new();
    let send = async {
        // The client keeps its sending side open: hyper drops a request whose client half-closed.
        let _ = writer.write_all(input).await;
        std::future::pending::<()>().await
    };
    let receive = async {
        while let Ok(Ok(n)) = tokio::time::timeout(QUIET, reader.read_buf(&mut answer)).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = send => {}
        _ = receive => {}
    }
    drop((reader, writer));
    let _ = serving.await;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn status(answer: &[u8]) -> &str {
        std::str::from_utf8(answer.get(9..12).unwrap_or_default()).unwrap_or("")
    }

    /// CONNECT is refused before routing: a 2xx to it would make the backend connection a
    /// tunnel.
    #[tokio::test(start_paused = true)]
    async fn connect_is_refused() {
        let answer = replay(
            &proxy(),
            b"CONNECT app.example:443 HTTP/1.1\r\nHost: app.example:443\r\n\r\n",
        )
        .await;
        assert_eq!(
            status(&answer),
            "405",
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    /// Every seed of the fuzz corpus, and what the proxy must answer to some of them (by the
    /// file name's prefix).
    #[tokio::test(start_paused = true)]
    async fn seed_corpus() {
        let proxy = proxy();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/request");
        let mut wrong = Vec::new();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("the seed corpus") {
            let path = entry.unwrap().path();
            let answer = replay(&proxy, &std::fs::read(&path).unwrap()).await;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let expected = match name.split('-').next().unwrap() {
                "ok" => Some("503"), // well-formed: routed, and no backend is there
                "bad" => Some("400"),
                "big" => Some("431"),
                _ => None,
            };
            // Both lengths: hyper frames by Transfer-Encoding, drops Content-Length (so the
            // backend sees one framing) and closes the connection after the answer.
            let closes = !name.contains("cl-and-te")
                || String::from_utf8_lossy(&answer).contains("connection: close");
            if expected.is_some_and(|e| e != status(&answer)) || !closes {
                wrong.push(format!("{name}: {:?}", String::from_utf8_lossy(&answer)));
            }
            seen += 1;
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(seen >= 10, "{seen} seeds in {}", dir.display());
    }
}
