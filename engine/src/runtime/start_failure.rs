//! Why a core could not start, in words an operator can act on.
//!
//! A core's executor sets up io_uring rings, which need locked memory
//! (`RLIMIT_MEMLOCK`) and a kernel that allows io_uring at all. When either
//! is missing the executor thread dies before it can say why, so the
//! daemon probes both after the fact (issue 17: containers often have a
//! 64 KiB memlock limit, and some disable io_uring by sysctl or seccomp).

/// Locked memory the rings of one core need: measured on Linux 6.x, two
/// cores start with 512 KiB and not with 256 KiB.
const MEMLOCK_PER_CORE: u64 = 256 * 1024;

/// The likely cause of a core start failure, and the fix.
pub fn explain(cores: u16) -> String {
    if let Some(why) = io_uring_unavailable() {
        return why;
    }
    if let Some(limit) = memlock_limit()
        && limit < MEMLOCK_PER_CORE * u64::from(cores.max(1)).saturating_add(1)
    {
        return format!(
            "a core did not start: the locked-memory limit (RLIMIT_MEMLOCK) is {} KiB, and \
             the io_uring rings of {cores} cores need about {} KiB: raise it (`ulimit -l \
             unlimited`, `LimitMEMLOCK=infinity` in the systemd unit, `--ulimit memlock=-1` \
             for a container)",
            limit / 1024,
            MEMLOCK_PER_CORE * u64::from(cores) / 1024
        );
    }
    "a core did not start (io_uring could not be set up, or the core failed early; see the \
     log above)"
        .to_string()
}

/// The soft RLIMIT_MEMLOCK in bytes, unless unlimited.
fn memlock_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, writable `rl`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return None;
    }
    (rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur)
}

/// Whether the kernel refuses io_uring: the sysctl, or a seccomp filter
/// (which makes io_uring_setup fail with ENOSYS or EPERM).
fn io_uring_unavailable() -> Option<String> {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    if let Some(v) = sysctl.as_deref().map(str::trim)
        && v != "0"
    {
        return Some(format!(
            "a core did not start: io_uring is disabled on this host (kernel.io_uring_disabled \
             = {v}); corepost needs it: `sysctl kernel.io_uring_disabled=0`"
        ));
    }
    // struct io_uring_params is 120 bytes; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only the 120-byte params
    // buffer, which is valid and writable for the call; a returned file
    // descriptor is closed right away.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: `fd` is a descriptor this function just received and owns.
        unsafe { libc::close(fd as i32) };
        return None;
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) => Some(format!(
            "a core did not start: io_uring is not available ({err}): a seccomp profile (e.g. a \
             container runtime's default) or the kernel forbids it; corepost needs io_uring"
        )),
        _ => None,
    }
}
