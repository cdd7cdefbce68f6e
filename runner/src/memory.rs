//! The memory of a process that serves call after call (`run` answering, `demo`).
//!
//! Each call runs a pipeline whose streaming threads (a dozen or so) come and go with it.
//! glibc gives a thread that finds the malloc arenas busy an arena of its own, up to 8 per
//! core, and an arena keeps the memory its threads freed, in pages that a few live chunks
//! pin: an echo bot on 2 cores grew by 12 to 15 MB per call for its first 10 calls, and was
//! still growing at 30 (from 38 to 214 MB); with more cores the ceiling is higher still.
//! Once the one object leak was fixed (the aux sender, `congestion.rs`), the leaks tracer
//! counted the same live GStreamer objects after 2 calls and after 6, yet RSS grew as much:
//! it is the arenas. With `MALLOC_ARENA_MAX=2` the same 30 calls stayed in 65 to 82 MB, and
//! with 4 in 80 to 105 MB, flat from about the tenth call on.
//!
//! `MALLOC_ARENA_MAX` in the environment still decides, when it is set.

/// Fewest arenas: threads that allocate at the same moment wait for each other less.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS_MIN: usize = 2;
/// Most arenas, however many cores: each holds memory of its own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS_MAX: usize = 8;

/// Bounds glibc's malloc arenas to one per core (at least 2, at most 8), unless
/// `MALLOC_ARENA_MAX` says otherwise. Call first thing, before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(ARENAS_MIN, |n| n.get());
        let arenas = cores.clamp(ARENAS_MIN, ARENAS_MAX) as libc::c_int;
        // SAFETY: mallopt only sets a tunable of glibc's allocator, which is what this
        // process uses (target_env = "gnu"); arenas made before it stay, none are yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Gives the memory a finished call freed back to the system (what the arenas hold free
/// beyond their live chunks), so that a call's peak does not stay in the process's RSS
/// until the next one reuses it.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
