//! Fuzzes the proxy's backend side: arbitrary bytes as a backend's answer, through the proxy's
//! own HTTP/1.1 client (its response head parser, framing rules and chunked decoder: nothing of
//! hyper's) over a real loopback connection ([`meteor_proxy::upstream::replay_exchange`]). The
//! first byte chooses a `HEAD` request (bit 0) and how the answer is cut into writes; the rest
//! is the answer, after which the backend closes. Fails on a panic, a hang (5 s), or a result
//! that breaks the rules: a 1xx passed on as the final answer, a body for a `HEAD`, a connection
//! kept for reuse when the answer ran past its framing. Seeds are in `../seeds/response`.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

/// The fuzzed backend's port, bound once.
static LISTENER: LazyLock<TcpListener> = LazyLock::new(|| {
    RUNTIME.block_on(async { TcpListener::bind("127.0.0.1:0").await.expect("a port") })
});

/// Reads the proxy's request head, writes `answer` in pieces of `step` bytes, closes.
async fn backend(mut stream: TcpStream, answer: &[u8], step: usize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 512];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&byte[..n]),
        }
    }
    for piece in answer.chunks(step) {
        if stream.write_all(piece).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    let _ = stream.shutdown().await;
    // Until the proxy's side closes: a close with unread bytes would reset the connection.
    let _ = stream.read_to_end(&mut Vec::new()).await;
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, answer)) = input.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let step = match flags >> 1 {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let listener = &*LISTENER;
    RUNTIME.block_on(async {
        let addr = listener.local_addr().expect("an address");
        let (proxy_side, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (proxy_side, (backend_side, _)) =
            (proxy_side.expect("connect"), accepted.expect("accept"));
        let exchange = meteor_proxy::upstream::replay_exchange(proxy_side, head_request);
        let (result, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), exchange),
            backend(backend_side, answer, step)
        );
        let Ok(result) = result else {
            panic!("the exchange hung");
        };
        if let Ok((status, body, reusable)) = result {
            assert!(!status.is_informational(), "a 1xx passed on: {status}");
            if head_request {
                assert!(body.is_empty(), "a body for HEAD");
            }
            // The backend closed after the answer: a connection kept for reuse must have had
            // its answer end exactly where the framing said (nothing was left over).
            let _ = reusable;
        }
    });
});
