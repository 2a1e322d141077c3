//! Fuzzes the proxy's client side: arbitrary bytes as one client connection, through hyper's
//! parser with the proxy's limits and the proxy's own checks and routing
//! ([`meteor_proxy::replay`]). It fails on a panic or a hang; seeds are in `../seeds/request`.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use meteor_proxy::replay;
use meteor_proxy::server::Proxy;

/// Paused time: the harness's quiet period passes as soon as the proxy is idle.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
});

static PROXY: LazyLock<Arc<Proxy>> = LazyLock::new(replay::proxy);

fuzz_target!(|input: &[u8]| {
    RUNTIME.block_on(replay::replay(&PROXY, input));
});
