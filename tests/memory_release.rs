//! Why the operator calls `malloc_trim`: with glibc, memory freed below a live allocation stays
//! resident (free gives back only the top of a heap) until `release_free_pages` hands it back.
//! Alone in its test binary, so no other test's allocations move the resident set meanwhile.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use meteor_operator::controller::memory::release_free_pages;

/// The process's resident set, from `/proc/self/statm` (in pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .expect("resident pages")
        .parse()
        .expect("a number");
    pages * 4096
}

#[test]
fn memory_freed_below_a_live_allocation_goes_back_only_when_released() {
    const MIB: u64 = 1 << 20;
    // 64 MiB in 1 KiB blocks (heap memory: far below glibc's mmap threshold), each written, then
    // one block allocated after them that stays alive, as a cache entry would.
    let blocks: Vec<Box<[u8; 1024]>> = (0..64 * 1024).map(|i| Box::new([i as u8; 1024])).collect();
    let live = Box::new([7u8; 1024]);
    let filled = resident_bytes();
    drop(blocks);
    let freed = resident_bytes();
    release_free_pages();
    let released = resident_bytes();
    assert_eq!(live[1023], 7);
    assert!(
        filled.saturating_sub(freed) < 16 * MIB,
        "free alone gave back {} MiB: glibc kept less than this test assumes",
        filled.saturating_sub(freed) / MIB
    );
    assert!(
        freed.saturating_sub(released) >= 48 * MIB,
        "release_free_pages gave back {} MiB of the 64 freed (resident {} -> {} MiB)",
        freed.saturating_sub(released) / MIB,
        freed / MIB,
        released / MIB
    );
}
