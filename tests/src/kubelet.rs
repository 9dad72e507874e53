//! The kubelet's stand-in (the testbed has no kubelet): on one front node,
//! it runs an HTTP readiness probe against the node's nginx with
//! Kubernetes' timing, and keeps the endpoint's `ready` condition in the
//! Service's EndpointSlice for that node, as the kubelet and the
//! EndpointSlice controller do between them. It writes through its own
//! kubeconfig, so a node cut off from the API cannot report either.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::netns::Netns;

/// A readiness probe's timing; `Default` is Kubernetes' (periodSeconds 10,
/// timeoutSeconds 1, failureThreshold 3, successThreshold 1).
#[derive(Clone, Copy, Debug)]
pub struct ReadinessProbe {
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Default for ReadinessProbe {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

/// Where the stand-in reports: the EndpointSlice `slice` in `namespace`,
/// which holds this node's endpoint alone (address `target`'s IP, port
/// `target`'s port, named `http`).
pub struct Report {
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub slice: String,
    pub node: String,
}

/// The running stand-in; stops on drop.
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    marks: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl Kubelet {
    /// Probes `GET http://target/` from inside `ns`, starting at a random
    /// point in the first period (as the kubelet's probe workers do), the
    /// endpoint taken as ready to begin with.
    pub fn start(
        ns: &Netns,
        target: SocketAddr,
        probe: ReadinessProbe,
        report: Report,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let marks = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (stop.clone(), marks.clone());
        let thread = ns.spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return eprintln!("kubelet stand-in: no runtime: {e}"),
            };
            let api = match runtime.block_on(client(&report)) {
                Ok(c) => Api::<EndpointSlice>::namespaced(c, &report.namespace),
                Err(e) => return eprintln!("kubelet stand-in: {e:#}"),
            };
            let jitter = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()) as u64
                % probe.period.as_nanos().max(1) as u64;
            let mut next = Instant::now() + Duration::from_nanos(jitter);
            let (mut ready, mut written) = (true, true);
            let (mut failures, mut successes) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                next += probe.period;
                if http_get(target, probe.timeout) {
                    (failures, successes) = (0, successes + 1);
                    if !ready && successes >= probe.success_threshold {
                        ready = true;
                    }
                } else {
                    (failures, successes) = (failures + 1, 0);
                    if ready && failures >= probe.failure_threshold {
                        ready = false;
                    }
                }
                // A write that failed is tried again at the next probe.
                if ready != written {
                    let endpoints = json!({"endpoints": [{
                        "addresses": [target.ip().to_string()],
                        "conditions": {"ready": ready},
                        "nodeName": report.node,
                    }]});
                    let (params, patch) = (PatchParams::default(), Patch::Merge(&endpoints));
                    if runtime
                        .block_on(api.patch(&report.slice, &params, &patch))
                        .is_ok()
                    {
                        written = ready;
                        crate::apiserver::lock(&log).push((now_ns(), ready));
                    }
                }
            }
        })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            marks,
        })
    }

    /// Each change of readiness it wrote: (Unix ns, ready).
    pub fn marks(&self) -> Vec<(u64, bool)> {
        crate::apiserver::lock(&self.marks).clone()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The EndpointSlice the stand-in keeps: node `node`'s endpoint of
/// Service `service`, at `target`.
pub fn slice(name: &str, service: &str, node: &str, target: SocketAddr) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": if target.is_ipv4() { "IPv4" } else { "IPv6" },
        "ports": [{"name": "http", "port": target.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [target.ip().to_string()], "conditions": {"ready": true}, "nodeName": node}]
    })
}

async fn client(report: &Report) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(&report.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("cannot use {}", report.kubeconfig.display()))?;
    Ok(Client::try_from(config)?)
}

/// An HTTP probe: an answer from 200 to 399 within `timeout`.
fn http_get(target: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&target, timeout) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    if conn
        .write_all(
            b"GET / HTTP/1.1\r\nHost: probe\r\nUser-Agent: kube-probe\r\nConnection: close\r\n\r\n",
        )
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    if conn.read_exact(&mut head).is_err() {
        return false;
    }
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| (200..400).contains(&c))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
