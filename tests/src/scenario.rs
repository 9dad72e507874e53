//! The origin scenario on the LAN testbed: front nodes labelled
//! `node-role: front`, a pool holding the VIPs and an L2Advertisement for
//! the front nodes (both in the test's namespace, which the agents read as
//! their config namespace), one LoadBalancer Service per VIP
//! (externalTrafficPolicy Local) with a ready endpoint on every front node
//! and the VIP already in its status, and `speaker agent` on each front
//! node. Ownership is read
//! three ways: the record in the API, each node's BPF map, and the MAC that
//! answers the client on the wire.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    agent::Agent,
    apiserver::{ENDPOINT_SLICES, IP_ADDRESS_POOLS, L2_ADVERTISEMENTS, LEASES, NODES, SERVICES},
    lan::Lan,
    wait_for,
};

pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

pub struct Scenario {
    // Agents go before the network they run in.
    pub agents: Vec<Option<Agent>>,
    pub lan: Lan,
    pub vips: Vec<String>,
    /// Extra arguments of every agent started from now on. They hand over
    /// on SIGTERM unless told otherwise (`--on-sigterm keep`), wherever
    /// the tests run.
    pub agent_args: Vec<String>,
}

/// A Ready front Node at `ip` (where its agent's peers reach it).
pub fn node(name: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"node-role": "front"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": ip}]}
    })
}

fn service_name(i: usize) -> String {
    format!("nginx-{i}")
}

/// The EndpointSlice of Service `i`: one endpoint per front node.
pub fn slice(i: usize, ready: &[bool]) -> Value {
    let endpoints: Vec<Value> = ready
        .iter()
        .enumerate()
        .map(|(n, r)| {
            json!({"addresses": [format!("10.0.{i}.{}", n + 1)], "conditions": {"ready": r}, "nodeName": format!("front-{n}")})
        })
        .collect();
    json!({
        "metadata": {"name": format!("{}-1", service_name(i)), "labels": {"kubernetes.io/service-name": service_name(i)}},
        "addressType": "IPv4",
        "endpoints": endpoints
    })
}

impl Scenario {
    /// The testbed and the seed objects; no agent runs yet.
    pub fn new(fronts: usize, vips: &[&str]) -> Result<Self> {
        Self::build(fronts, vips, true, None)
    }

    /// The origin story's objects as a user writes them: one pool given
    /// as the CIDR `pool`, the L2Advertisement for the front nodes, and
    /// the nginx Service asking for no address (`speaker controller` must
    /// give it one). `vips` are the addresses the front nodes' kernels
    /// accept.
    pub fn story(fronts: usize, pool: &str, vips: &[&str]) -> Result<Self> {
        Self::build(fronts, vips, true, Some(pool))
    }

    /// As [`Scenario::new`], without giving the front nodes' kernels the
    /// VIPs (no traffic to them is needed): for measurements of the API
    /// side with many VIPs.
    pub fn api_only(fronts: usize, vips: &[&str]) -> Result<Self> {
        Self::build(fronts, vips, false, None)
    }

    fn build(fronts: usize, vips: &[&str], accept: bool, pool: Option<&str>) -> Result<Self> {
        let lan = Lan::new(fronts, if accept { vips } else { &[] })?;
        let c = &lan.cluster;
        for (i, f) in lan.fronts.iter().enumerate() {
            c.create(&NODES, node(&f.name, &Lan::front_ip(i)))?;
        }
        let addresses: Vec<String> = match pool {
            Some(cidr) => vec![cidr.to_string()],
            None => vips
                .iter()
                .map(|v| {
                    if v.contains(':') {
                        format!("{v}/128")
                    } else {
                        format!("{v}/32")
                    }
                })
                .collect(),
        };
        c.create(
            &IP_ADDRESS_POOLS,
            json!({"metadata": {"name": "front"}, "spec": {"addresses": addresses}}),
        )?;
        c.create(&L2_ADVERTISEMENTS, json!({"metadata": {"name": "front"}, "spec": {"ipAddressPools": ["front"], "nodeSelectors": [{"matchLabels": {"node-role": "front"}}]}}))?;
        for (i, vip) in vips.iter().enumerate() {
            let mut svc = json!({
                "metadata": {"name": service_name(i)},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}],
                         "ipFamilies": [if vip.contains(':') { "IPv6" } else { "IPv4" }], "ipFamilyPolicy": "SingleStack"},
                "status": {"loadBalancer": {"ingress": [{"ip": vip}]}}
            });
            if pool.is_some() {
                svc["status"] = json!({});
            }
            c.create(&SERVICES, svc)?;
            c.create(&ENDPOINT_SLICES, slice(i, &vec![true; fronts]))?;
        }
        let agents = (0..fronts).map(|_| None).collect();
        Ok(Self {
            agents,
            lan,
            vips: vips.iter().map(|v| v.to_string()).collect(),
            agent_args: vec!["--on-sigterm".into(), "handover".into()],
        })
    }

    /// Starts the agent of front node `i` (and waits until it attached).
    pub fn start(&mut self, i: usize) -> Result<()> {
        let name = self.lan.fronts[i].name.clone();
        let mut agent = self.spawn_as(i, &name)?;
        agent.wait_ready(&self.lan.fronts[i].ns, "eth0")?;
        self.agents[i] = Some(agent);
        Ok(())
    }

    /// Starts an agent on front node `i` under the node name `node`,
    /// without waiting for it.
    pub fn spawn_as(&self, i: usize, node: &str) -> Result<Agent> {
        let f = &self.lan.fronts[i];
        let kubeconfig = self.lan.cluster.kubeconfig(i).as_os_str().to_owned();
        let ns = self.lan.cluster.namespace();
        #[rustfmt::skip]
        let args = ["agent", "--node-name", node, "--namespace", ns, "--config-namespace", ns, "-i", "eth0", "--metrics-addr", "127.0.0.1:7474"];
        let args: Vec<&str> = args
            .into_iter()
            .chain(self.agent_args.iter().map(String::as_str))
            .collect();
        Agent::start_with_env(&f.ns, &args, &[("KUBECONFIG", kubeconfig.as_os_str())])
    }

    /// Starts an agent in front node `i`'s namespace under the node name
    /// `node`, as if on another machine (a bpffs folder of its own),
    /// without waiting for it.
    pub fn spawn_elsewhere(&self, i: usize, node: &str) -> Result<Agent> {
        let f = &self.lan.fronts[i];
        let kubeconfig = self.lan.cluster.kubeconfig(i).as_os_str().to_owned();
        let ns = self.lan.cluster.namespace();
        let bpffs = format!("/sys/fs/bpf/{}-elsewhere", f.ns.name());
        #[rustfmt::skip]
        let args = ["agent", "--node-name", node, "--namespace", ns, "--config-namespace", ns, "-i", "eth0", "--metrics-addr", "127.0.0.1:7479"];
        let args: Vec<&str> = args
            .into_iter()
            .chain(self.agent_args.iter().map(String::as_str))
            .collect();
        Agent::start_in(
            &f.ns,
            &args,
            &[("KUBECONFIG", kubeconfig.as_os_str())],
            bpffs.into(),
        )
    }

    /// Starts `speaker controller` on front node 0 (as a Deployment's pod
    /// would run somewhere in the cluster), without waiting for it.
    pub fn start_controller(&self) -> Result<Agent> {
        let kubeconfig = self.lan.cluster.kubeconfig(0).as_os_str().to_owned();
        let ns = self.lan.cluster.namespace();
        #[rustfmt::skip]
        let args = ["--namespace", ns, "--config-namespace", ns, "--metrics-addr", "127.0.0.1:7473"];
        Agent::start_controller(
            &self.lan.fronts[0].ns,
            &args,
            &[("KUBECONFIG", kubeconfig.as_os_str())],
        )
    }

    /// The addresses Service `i`'s status shows.
    pub fn service_ips(&self, i: usize) -> Vec<String> {
        let svc = self
            .lan
            .cluster
            .get(&SERVICES, &service_name(i))
            .ok()
            .flatten();
        svc.and_then(|s| s["status"]["loadBalancer"]["ingress"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i["ip"].as_str().map(str::to_string))
            .collect()
    }

    /// Every request the agents made is one deploy/ grants them
    /// (`speaker::k8s::access::AGENT`, which tests/tests/deploy.rs compares
    /// with the manifests). Against the stand-in only, which records
    /// requests.
    pub fn assert_agents_granted(&self) {
        if let Some(server) = self.lan.cluster.stand_in() {
            let ns = self.lan.cluster.namespace();
            let seen = server.stats().accesses;
            let extra = crate::rbac::ungranted(&seen, speaker::k8s::access::AGENT, ns, ns);
            assert!(extra.is_empty(), "requests RBAC does not grant: {extra:#?}");
        }
    }

    /// The agent's `/metrics` page on front node `node`, read inside its
    /// namespace (empty when it does not answer).
    pub fn metrics(&self, node: &str) -> String {
        use std::io::{Read as _, Write as _};
        let ns = &self.lan.fronts[self.index(node)].ns;
        let page = ns.enter(|| {
            let mut conn = std::net::TcpStream::connect("127.0.0.1:7474").ok()?;
            conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut reply = String::new();
            conn.read_to_string(&mut reply).ok()?;
            Some(reply)
        });
        page.ok().flatten().unwrap_or_default()
    }

    pub fn delete_service(&self, i: usize) -> Result<()> {
        self.lan.cluster.delete(&SERVICES, &service_name(i))
    }

    /// Service 0's endpoints made servers: a TCP server on each front's
    /// address, port [`ENDPOINT_PORT`], and the EndpointSlice naming them
    /// (all ready), so the agents' local endpoint probe has them to check.
    /// Dropping a server is nginx dying while the kubelet has not noticed.
    pub fn serve_endpoints(&self) -> Result<Vec<Option<TcpServer>>> {
        let servers = (0..self.lan.fronts.len())
            .map(|i| TcpServer::start(&self.lan, i).map(Some))
            .collect::<Result<_>>()?;
        let endpoints: Vec<Value> = (0..self.lan.fronts.len())
            .map(|i| {
                json!({"addresses": [Lan::front_ip(i)], "conditions": {"ready": true},
                       "nodeName": self.lan.fronts[i].name})
            })
            .collect();
        let mut s = slice(0, &[]);
        s["ports"] = json!([{"name": "http", "port": ENDPOINT_PORT, "protocol": "TCP"}]);
        s["endpoints"] = json!(endpoints);
        self.lan.cluster.replace(&ENDPOINT_SLICES, s)?;
        Ok(servers)
    }

    /// The running agents' peak resident memory, in MiB.
    pub fn agents_peak_mib(&self) -> Vec<f64> {
        self.agents
            .iter()
            .flatten()
            .filter_map(|a| a.memory().ok())
            .map(|(_, peak)| peak)
            .collect()
    }

    pub fn start_all(&mut self) -> Result<()> {
        (0..self.agents.len()).try_for_each(|i| self.start(i))
    }

    pub fn index(&self, name: &str) -> usize {
        self.lan
            .fronts
            .iter()
            .position(|f| f.name == name)
            .unwrap_or(usize::MAX)
    }

    /// The agent of node `name`, taken out (to stop or kill it).
    pub fn take(&mut self, name: &str) -> Result<Agent> {
        let i = self.index(name);
        self.agents
            .get_mut(i)
            .and_then(Option::take)
            .context("no agent runs there")
    }

    /// How many VIPs each node holds, per the records in the API.
    pub fn holdings(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for lease in self.lan.cluster.list(&LEASES).unwrap_or_default() {
            let is_vip =
                lease["metadata"]["annotations"][speaker::k8s::leases::VIP_ANNOTATION].is_string();
            if let (true, Some(h)) = (is_vip, lease["spec"]["holderIdentity"].as_str()) {
                *out.entry(h.to_string()).or_insert(0) += 1;
            }
        }
        out
    }

    /// The VIP's owner according to its record in the API.
    pub fn holder(&self, vip: &str) -> Option<String> {
        let name = speaker::k8s::leases::vip_lease_name(vip.parse().ok()?);
        let lease = self.lan.cluster.get(&LEASES, &name).ok()??;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    /// The VIP's ownership record as it stands: (holder, term, resourceVersion).
    pub fn record(&self, vip: &str) -> Option<(Option<String>, i64, String)> {
        let name = speaker::k8s::leases::vip_lease_name(vip.parse().ok()?);
        let lease = self.lan.cluster.get(&LEASES, &name).ok()??;
        Some((
            lease["spec"]["holderIdentity"].as_str().map(str::to_string),
            lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
            lease["metadata"]["resourceVersion"].as_str()?.to_string(),
        ))
    }

    /// The nodes whose BPF map holds an unexpired entry for the VIP.
    pub fn answering_by_map(&self, vip: &str) -> Vec<String> {
        let now = speaker::dataplane::now_ns();
        let Ok(addr) = vip.parse::<std::net::IpAddr>() else {
            return Vec::new();
        };
        let want: Vec<u64> = match addr {
            std::net::IpAddr::V4(a) => a.octets().iter().map(|b| u64::from(*b)).collect(),
            std::net::IpAddr::V6(a) => a.octets().iter().map(|b| u64::from(*b)).collect(),
        };
        self.lan
            .fronts
            .iter()
            .zip(&self.agents)
            .filter(|(_, a)| {
                a.as_ref().is_some_and(|a| {
                    let Ok(out) = std::process::Command::new("bpftool")
                        .args(["-j", "map", "dump", "pinned"])
                        .arg(a.bpffs.join("VIPS"))
                        .output()
                    else {
                        return false;
                    };
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                    v.as_array().into_iter().flatten().any(|e| {
                        let f = &e["formatted"];
                        let key: Vec<u64> = f["key"]["addr"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_u64)
                            .take(want.len())
                            .collect();
                        let exp = f["value"]["expires_ns"].as_u64().unwrap_or(0);
                        key == want && (exp == 0 || exp > now)
                    })
                })
            })
            .map(|(f, _)| f.name.clone())
            .collect()
    }

    /// The client asking for `vip` every 20 ms, `count` times (arping), in
    /// the background.
    pub fn arp_probe(&self, vip: &str, count: u32) -> Result<std::process::Child> {
        let n = count.to_string();
        let args = ["-q", "-i", "eth0", "-W", "0.02", "-c", n.as_str(), vip];
        Ok(self.lan.client.command("arping").args(args).spawn()?)
    }

    /// The node whose MAC answers the client's ARP request for the VIP.
    pub fn answering_on_wire(&self, vip: &str) -> Option<String> {
        let out = self
            .lan
            .client
            .command("arping")
            .args(["-r", "-i", "eth0", "-c", "1", "-w", "1", vip])
            .output()
            .ok()?;
        // The first reply: another prober on the client may add more.
        let text = String::from_utf8_lossy(&out.stdout);
        let mac = crate::netns::parse_mac(text.lines().next()?.trim()).ok()?;
        self.lan
            .front_by_mac(mac)
            .map(|i| self.lan.fronts[i].name.clone())
    }

    /// Waits until exactly one node owns the VIP per the record, every map
    /// and the wire, and it satisfies `ok`; returns it, or panics with the
    /// three views and the agents' logs.
    pub fn settled(&self, vip: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let mut last = (None, Vec::new(), None);
        let done = wait_for(within, || {
            let h = self.holder(vip);
            let maps = self.answering_by_map(vip);
            let single = h.is_some() && maps.len() == 1;
            let wire = if single {
                self.answering_on_wire(vip)
            } else {
                None
            };
            let good = h.as_deref().is_some_and(&ok)
                && maps == [h.clone().unwrap_or_default()]
                && wire == h;
            last = (h, maps, wire);
            good
        });
        if done.is_none() {
            let logs: Vec<String> = self.agents.iter().flatten().map(Agent::log).collect();
            panic!(
                "{vip} not settled within {within:?}: record {:?}, maps {:?}, wire {:?}\n{}",
                last.0,
                last.1,
                last.2,
                logs.join("\n-----\n")
            );
        }
        last.0.unwrap_or_default()
    }

    /// Marks node `name`'s endpoint of every Service ready or not.
    pub fn set_endpoint_ready(&self, name: &str, ready: bool) -> Result<()> {
        let mut all = vec![true; self.lan.fronts.len()];
        all[self.index(name)] = ready;
        for i in 0..self.vips.len() {
            self.lan.cluster.replace(&ENDPOINT_SLICES, slice(i, &all))?;
        }
        Ok(())
    }

    /// Labels node `name` excluded from external load balancers.
    pub fn exclude(&self, name: &str) -> Result<()> {
        let mut n = node(name, &Lan::front_ip(self.index(name)));
        n["metadata"]["labels"][EXCLUDE_LABEL] = json!("true");
        self.lan.cluster.replace(&NODES, n).map(drop)
    }
}

/// Where [`Scenario::serve_endpoints`] serves.
pub const ENDPOINT_PORT: u16 = 8080;

/// A TCP server on port [`ENDPOINT_PORT`] of a front's address, in its
/// namespace, accepting and closing connections (nginx's stand-in: the
/// local endpoint probe only connects), until dropped.
pub struct TcpServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(lan: &Lan, i: usize) -> Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = lan.fronts[i]
            .ns
            .enter(|| std::net::TcpListener::bind((Lan::front_ip(i).as_str(), ENDPOINT_PORT)))??;
        listener.set_nonblocking(true)?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if listener.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
