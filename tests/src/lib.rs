//! The testbed: real kernels and real packets in network namespaces that it
//! creates and always removes. Shared by the integration tests (tests/tests),
//! the demo and the benchmarks (src/bin).

pub mod agent;
pub mod apiserver;
pub mod bpftool;
pub mod capture;
pub mod cluster;
pub mod frames;
pub mod kubelet;
pub mod lan;
pub mod model;
pub mod netns;
pub mod nginx;
pub mod prober;
pub mod programs;
pub mod rbac;
pub mod scenario;
pub mod story;
pub mod topology;
pub mod worker;

/// Fails with a clear message when the tests cannot run here: they need
/// root (CAP_NET_ADMIN, CAP_BPF) and iproute2. They never skip.
pub fn require_privileges() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "these tests need root (CAP_NET_ADMIN and CAP_BPF for network namespaces and XDP); \
         run them with `sudo cargo xtask test`"
    );
    assert!(
        std::process::Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "these tests need iproute2 (`ip`); `cargo xtask test` installs it"
    );
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns the
/// time it took, or `None` on timeout.
pub fn wait_for(
    timeout: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
