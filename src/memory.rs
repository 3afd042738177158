//! glibc's allocator, tuned for this process: caches holding tens of thousands of small objects
//! for its whole life, each replaced by a new copy whenever its watch event arrives. By default
//! glibc gives every thread that meets contention an arena of its own and returns freed pages
//! only from the top of a heap, so the resident size grows with the churn rather than with what
//! is live. Two arenas, and a trim of the freed pages every few seconds, keep it near the live
//! size (BENCHMARKS.md, memory). Elsewhere (musl, another OS) these do nothing.

use std::time::Duration;

/// How often freed pages are handed back to the kernel.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    // `mallopt` and `malloc_trim` as glibc's <malloc.h> declares them.
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
        fn malloc_trim(pad: usize) -> i32;
    }

    /// `M_ARENA_MAX` in <malloc.h>.
    const M_ARENA_MAX: i32 = -8;

    pub fn limit_arenas(arenas: i32) {
        // SAFETY: mallopt only sets an allocator parameter; called before the runtime starts
        // its threads, as glibc advises for M_ARENA_MAX.
        unsafe {
            mallopt(M_ARENA_MAX, arenas);
        }
    }

    pub fn trim() {
        // SAFETY: malloc_trim takes the allocator's own locks and only releases free memory.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn limit_arenas(_arenas: i32) {}
    pub fn trim() {}
}

/// Caps glibc's arenas at two: call first thing in `main`, before any thread starts.
pub fn limit_arenas() {
    glibc::limit_arenas(2);
}

/// Hands freed pages back to the kernel every [`TRIM_INTERVAL`], for the life of the runtime.
pub fn spawn_trimmer() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            // A walk of the heap: off the async workers.
            let _ = tokio::task::spawn_blocking(glibc::trim).await;
        }
    })
}
