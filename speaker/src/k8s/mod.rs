//! Talking to the Kubernetes API: the Leases the agent reads and writes for
//! the election, the controller's Lease, the watches, and the Events both
//! post. The resource types MetalLB defines live apart, in `metallb`.

pub mod access;
pub mod events;
pub mod l2status;
pub mod leader;
pub mod leases;
pub mod preflight;
pub mod watch;

/// A client from KUBECONFIG or the in-cluster service account.
pub async fn client() -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    kube::Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (KUBECONFIG, or in-cluster service account)")
}

/// A name for this process, unique enough to tell two processes apart in
/// a Lease (two agents under one node name; controller replicas).
pub fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom(2) into a buffer of the length given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No entropy yet (very early boot): the pid and the time will do.
        let t = crate::dataplane::now_ns() ^ u64::from(std::process::id()) << 40;
        bytes = t.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
