//! Resident memory of the long-running services.
//!
//! The services allocate through mimalloc, which advises the kernel to back its arena with
//! transparent huge pages (`madvise(MADV_HUGEPAGE)`). Where the kernel's THP mode is `madvise`
//! (Debian's default) or `always`, each 2 MiB stretch of the arena the allocator touches then
//! becomes resident whole, so a few MiB of live heap spread over the arena held tens of MiB:
//! at 500 commands/s the command API was resident at 68 to 83 MiB with about 6 MiB of live
//! heap, and at 40 MiB with huge pages off, for the same CPU (docs/performance.md, "Resident
//! memory with small pages"). A one-shot job that folds a million events (`projector replay`)
//! is left to the kernel's default.

/// Turns transparent huge pages off for this process and whatever it starts, so the
/// allocator's arena stays on 4 KiB pages. Call it first in `main`: pages the allocator has
/// already touched stay huge. Fails only on kernels older than Linux 3.15.
pub fn use_small_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_thp_disable(true).map_err(std::io::Error::from)?;
    Ok(())
}

/// [`use_small_pages`] for a service's `main`: a failure costs memory, not correctness, so it
/// is reported on standard error (logging is not set up yet) and the service goes on.
pub fn use_small_pages_or_warn(service: &str) {
    if let Err(error) = use_small_pages() {
        crate::errln!(
            "{service}: transparent huge pages stay on ({error}); resident memory will be higher"
        );
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The kernel's own view of the process: `THP_enabled` in /proc/self/status (Linux 5.0+).
    fn thp_enabled() -> Option<String> {
        std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .map(|value| value.trim().to_owned())
    }

    #[test]
    fn small_pages_turn_transparent_huge_pages_off_for_the_process() {
        use_small_pages().expect("prctl(PR_SET_THP_DISABLE)");
        assert!(nix::sys::prctl::get_thp_disable().expect("prctl(PR_GET_THP_DISABLE)"));
        if let Some(enabled) = thp_enabled() {
            assert_eq!(enabled, "0", "THP_enabled in /proc/self/status");
        }
    }
}
