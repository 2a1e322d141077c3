//! Handing freed memory back to the system. glibc keeps what a process frees in its arenas for
//! reuse, and only gives back the top of a heap: what the initial lists, a relist after a
//! restart or a burst of events freed below live cache entries stays resident. At 1,000 apps that
//! was several MiB of the operator's resident set, nothing of its live heap.

use std::time::Duration;

/// How often free pages are handed back: often enough that a burst's leftovers do not linger,
/// rarely enough to cost nothing (one pass over glibc's free lists, a few milliseconds).
pub const RELEASE_EVERY: Duration = Duration::from_secs(60);

/// Hands every whole free page of the allocator's arenas back to the system (`malloc_trim(0)`);
/// a no-op where the C library is not glibc.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused pages of the allocator's own free chunks; it takes
    // the arena locks itself and touches no memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls [`release_free_pages`] every `every`, off the async workers, until dropped.
pub async fn keep_releasing(every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A failed pass (the blocking pool shutting down) changes nothing: the next one runs.
        let _ = tokio::task::spawn_blocking(release_free_pages).await;
    }
}
