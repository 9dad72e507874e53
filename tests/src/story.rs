//! The origin story, whole: front nodes each running a real nginx that
//! answers with its node's name, the kubelet's stand-in probing it, the
//! pool, the L2Advertisement and the nginx Service as a user writes them,
//! `speaker controller` giving the Service its address, `speaker agent` on
//! every front, and a worker on the client resolving `app.example.com` and
//! sending a request every period. Used by the demo, the HTTP benchmark
//! and the tests; the faults it can inflict are the ones users meet.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{
    agent::Agent,
    apiserver::{ENDPOINT_SLICES, SERVICES},
    kubelet::{self, Kubelet, ReadinessProbe, Report},
    lan::Lan,
    nginx::{self, Nginx},
    scenario::Scenario,
    worker::Worker,
};

/// The application's name, as the worker resolves it.
pub const HOST: &str = "app.example.com";
/// The pool: one address, which the controller gives the Service.
pub const POOL: &str = "198.18.0.10/32";
pub const VIP: &str = "198.18.0.10";
/// The Service (`crate::scenario`'s first).
pub const SERVICE: &str = "nginx-0";

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub fronts: usize,
    /// The kubelet's readiness probe of nginx.
    pub readiness: ReadinessProbe,
    /// The agents' local endpoint probe for the Service (on by default;
    /// off is the annotation `speaker.metal/endpoint-probe: "off"`).
    pub endpoint_probe: bool,
    /// How often the worker sends a request.
    pub every: Duration,
    /// What the agents do on SIGTERM: keep their VIPs for their successor
    /// (a restart) or hand them over.
    pub keep_on_sigterm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fronts: 3,
            readiness: ReadinessProbe::default(),
            endpoint_probe: true,
            every: Duration::from_millis(50),
            keep_on_sigterm: false,
        }
    }
}

pub struct Story {
    // Drop order: the worker, the kubelets, nginx, the controller, then
    // the agents and the network.
    pub worker: Worker,
    kubelets: Vec<Option<Kubelet>>,
    nginx: Vec<Option<Nginx>>,
    _controller: Agent,
    pub scenario: Scenario,
    options: Options,
    /// Pin folders of killed agents, removed at the end.
    left: Vec<std::path::PathBuf>,
}

impl Drop for Story {
    fn drop(&mut self) {
        for dir in &self.left {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Story {
    /// Everything up, front-0 answering for the VIP, the worker running.
    pub fn start(options: Options) -> Result<Self> {
        let mut s = Scenario::story(options.fronts, POOL, &[VIP])?;
        let c = &s.lan.cluster;
        // One EndpointSlice per node, each kept by that node's kubelet.
        c.delete(&ENDPOINT_SLICES, &format!("{SERVICE}-1"))?;
        for i in 0..options.fronts {
            let name = &s.lan.fronts[i].name;
            c.create(
                &ENDPOINT_SLICES,
                kubelet::slice(&slice_name(name), SERVICE, name, nginx_at(i)),
            )?;
        }
        if !options.endpoint_probe {
            let mut svc = c.get(&SERVICES, SERVICE)?.context("no Service")?;
            svc["metadata"]["annotations"] =
                json!({speaker::eligibility::probes::PROBE_ANNOTATION: "off"});
            c.replace(&SERVICES, svc)?;
        }
        let mut nginx = Vec::new();
        let mut kubelets = Vec::new();
        for i in 0..options.fronts {
            nginx.push(Some(start_nginx(&s, i)?));
            kubelets.push(Some(start_kubelet(&s, i, options.readiness)?));
        }
        let on_sigterm = if options.keep_on_sigterm {
            "keep"
        } else {
            "handover"
        };
        s.agent_args = vec!["--on-sigterm".into(), on_sigterm.into()];
        let controller = s.start_controller()?;
        if crate::wait_for(Duration::from_secs(10), || s.service_ips(0) == [VIP]).is_none() {
            bail!(
                "the controller gave {SERVICE} no address:\n{}",
                controller.log()
            );
        }
        s.start(0)?;
        s.settled(VIP, Duration::from_secs(10), |h| h == "front-0");
        for i in 1..options.fronts {
            s.start(i)?;
        }
        let worker = Worker::start(&s.lan.client, HOST, VIP, nginx::PORT, options.every)?;
        Ok(Self {
            worker,
            kubelets,
            nginx,
            _controller: controller,
            scenario: s,
            options,
            left: Vec::new(),
        })
    }

    /// The VIP's owner per its record.
    pub fn owner(&self) -> Option<String> {
        self.scenario.holder(VIP)
    }

    pub fn index(&self, node: &str) -> usize {
        self.scenario.index(node)
    }

    /// nginx on node `i` killed (SIGKILL).
    pub fn kill_nginx(&mut self, i: usize) {
        self.nginx[i] = None;
    }

    pub fn restart_nginx(&mut self, i: usize) -> Result<()> {
        self.nginx[i] = Some(start_nginx(&self.scenario, i)?);
        Ok(())
    }

    /// The agent of node `i` killed (SIGKILL); the data plane stays, its
    /// entries answering until they expire (pinned links), until the next
    /// agent of the node clears it.
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        let name = self.scenario.lan.fronts[i].name.clone();
        let mut agent = self.scenario.take(&name)?;
        agent.signal(libc::SIGKILL);
        let _ = agent.wait_exit(Duration::from_secs(5));
        self.left.push(agent.bpffs.clone());
        agent.leave_pins();
        drop(agent);
        Ok(())
    }

    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        self.scenario.start(i)
    }

    /// The agent of node `i` stopped (SIGTERM) and, once it has exited,
    /// started again, as a DaemonSet's rolling update does.
    pub fn restart_agent_in_place(&mut self, i: usize) -> Result<()> {
        let name = self.scenario.lan.fronts[i].name.clone();
        let mut agent = self.scenario.take(&name)?;
        let status = agent.terminate()?;
        if !status.success() {
            bail!(
                "the agent of {name} stopped with {status}:\n{}",
                agent.log()
            );
        }
        agent.leave_pins();
        drop(agent);
        self.scenario.start(i)
    }

    /// Node `i` dies: its agent, nginx and kubelet killed, its link down.
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        self.kill_agent(i)?;
        self.kill_nginx(i);
        self.kubelets[i] = None;
        self.scenario.lan.fronts[i]
            .ns
            .ip(&["link", "set", "eth0", "down"])?;
        Ok(())
    }

    /// Node `i` back: link up, nginx, kubelet and agent started.
    pub fn revive_node(&mut self, i: usize) -> Result<()> {
        self.scenario.lan.fronts[i]
            .ns
            .ip(&["link", "set", "eth0", "up"])?;
        self.restart_nginx(i)?;
        self.kubelets[i] = Some(start_kubelet(&self.scenario, i, self.options.readiness)?);
        self.restart_agent(i)
    }

    /// Node `i` cut off from the API (`false`) or back (`true`); its
    /// kubelet with it.
    pub fn api_reachable(&self, i: usize, on: bool) -> Result<()> {
        let listener = self
            .scenario
            .lan
            .cluster
            .node_listener(i)
            .context("the API stand-in is needed to cut a node off")?
            .clone();
        if on {
            self.scenario.lan.fronts[i]
                .ns
                .enter(move || listener.reopen())??;
        } else {
            listener.close();
        }
        Ok(())
    }

    /// The whole control plane down (`false`) or back (`true`).
    pub fn control_plane(&self, on: bool) -> Result<()> {
        (0..self.options.fronts).try_for_each(|i| self.api_reachable(i, on))
    }

    /// Every readiness change the kubelets wrote: (Unix ns, node, ready).
    pub fn readiness_marks(&self) -> Vec<(u64, String, bool)> {
        let mut all: Vec<(u64, String, bool)> = self
            .kubelets
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.as_ref().map(|k| (i, k)))
            .flat_map(|(i, k)| {
                let name = self.scenario.lan.fronts[i].name.clone();
                k.marks()
                    .into_iter()
                    .map(move |(t, r)| (t, name.clone(), r))
            })
            .collect();
        all.sort();
        all
    }

    /// Whether node `i`'s endpoint is ready per its EndpointSlice.
    pub fn endpoint_ready(&self, i: usize) -> Result<bool> {
        let name = slice_name(&self.scenario.lan.fronts[i].name);
        let slice = self
            .scenario
            .lan
            .cluster
            .get(&ENDPOINT_SLICES, &name)?
            .context("no EndpointSlice")?;
        Ok(slice["endpoints"][0]["conditions"]["ready"] != json!(false))
    }
}

fn slice_name(node: &str) -> String {
    format!("{SERVICE}-{node}")
}

/// Where node `i`'s nginx serves, as its endpoint.
fn nginx_at(i: usize) -> SocketAddr {
    SocketAddr::new(
        Lan::front_ip(i).parse().unwrap_or([0, 0, 0, 0].into()),
        nginx::PORT,
    )
}

fn start_nginx(s: &Scenario, i: usize) -> Result<Nginx> {
    let f = &s.lan.fronts[i];
    Nginx::start(&f.ns, &f.name, &Lan::front_ip(i))
}

fn start_kubelet(s: &Scenario, i: usize, probe: ReadinessProbe) -> Result<Kubelet> {
    let f = &s.lan.fronts[i];
    let report = Report {
        kubeconfig: s.lan.cluster.kubeconfig(i).to_path_buf(),
        namespace: s.lan.cluster.namespace().to_string(),
        slice: slice_name(&f.name),
        node: f.name.clone(),
    };
    Kubelet::start(&f.ns, nginx_at(i), probe, report)
}
