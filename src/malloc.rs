//! One allocator setting made at start (see [`bound_retention`]).

/// glibc raises its mmap threshold each time a large block is freed (up to
/// 32 MiB), after which large buffers — a 1 MiB job payload, a listing of
/// them, a buffered request body — come from the heap and stay in curfew's
/// RSS after they are freed. A fixed threshold turns that off: blocks of
/// 128 KiB and more are mapped and given back to the kernel when freed, so
/// memory follows the work in progress instead of its historic peak.
#[allow(unsafe_code)]
pub fn bound_retention() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called
    // before any thread exists, and a refusal (return 0) leaves glibc's
    // default, which is safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
