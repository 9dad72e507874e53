//! Command-line configuration and its validation. Everything from outside
//! is checked here, with an error naming the bad value.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use speaker_common::maps::DEFAULT_BPFFS_DIR;
use thiserror::Error;

use crate::{
    announce::BurstSettings,
    dataplane::AttachMode,
    election::Timings,
    eligibility::Settings,
    netdev::{Link, NetdevError},
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Interface(#[from] NetdevError),
    #[error("VIP {0}: {1}")]
    Vip(IpAddr, &'static str),
    #[error("{0}")]
    Timing(String),
}

/// `speaker static`: answer for fixed VIPs, no Kubernetes, no election.
#[derive(Debug, clap::Args)]
pub struct StaticArgs {
    /// Where to answer (repeatable): an interface, or IF:VID for 802.1Q VLAN
    /// VID on it. VIPs given without @ are answered on each of these.
    #[arg(long = "interface", short = 'i', value_name = "IF[:VID]")]
    pub interfaces: Vec<String>,
    /// Virtual IP to answer for (repeatable), IPv4 or IPv6; ADDR@LINK,... to
    /// answer only on those links (each IF or IF:VID).
    #[arg(long = "vip", value_name = "ADDR[@LINKS]", required = true, value_parser = parse_vip_arg)]
    pub vips: Vec<VipArg>,
    /// How long the data plane keeps answering without a refresh (the
    /// dead-man's switch).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub hold_time: Duration,
    /// How often the agent refreshes each VIP's expiry.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub refresh_interval: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// A `--vip` value: the address, and the links it is limited to (none:
/// every `--interface`).
#[derive(Clone, Debug)]
pub struct VipArg {
    pub addr: IpAddr,
    pub links: Vec<String>,
}

fn parse_vip_arg(s: &str) -> Result<VipArg, String> {
    let (addr, links) = match s.split_once('@') {
        Some((addr, links)) => (addr, links.split(',').map(str::to_string).collect()),
        None => (s, Vec::new()),
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
    Ok(VipArg { addr, links })
}

/// `speaker agent`: the Kubernetes mode.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// This node's name (from the downward API in the DaemonSet).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: String,
    /// Namespace of the election's Leases.
    #[arg(long, default_value = "speaker-system")]
    pub namespace: String,
    /// Namespace the IPAddressPools and L2Advertisements are read from
    /// (MetalLB's, so a MetalLB install's configuration works as it is).
    #[arg(long, default_value = "metallb-system", value_name = "NAMESPACE")]
    pub config_namespace: String,
    /// Where to announce when an L2Advertisement names no interfaces
    /// (repeatable): an interface, or IF:VID for an 802.1Q VLAN on it.
    #[arg(
        long = "interface",
        short = 'i',
        value_name = "IF[:VID]",
        required = true
    )]
    pub interfaces: Vec<String>,
    /// Announce Services of this spec.loadBalancerClass.
    #[arg(long, value_name = "CLASS")]
    pub load_balancer_class: Option<String>,
    /// Announce Services without a loadBalancerClass.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub announce_classless: bool,
    /// How long a node lease must go unrenewed before its VIPs are taken over.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often this node renews its lease.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub renew_interval: Duration,
    /// How long after its last successful renewal was sent this node keeps
    /// answering.
    #[arg(long, value_name = "DURATION", default_value = "1500ms", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// Wait per rank before contending for a free VIP or a takeover.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub stagger: Duration,
    /// Address of the /metrics, /healthz and /readyz endpoints (not
    /// MetalLB's 7472 on the host network, so both can run during a
    /// migration).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7474")]
    pub metrics_addr: std::net::SocketAddr,
    /// When this node's renewals fail: `hold` keeps answering for its VIPs
    /// on promises from its peers (never two answer), `release` stops at
    /// the renew deadline.
    #[arg(long, value_enum, default_value = "hold")]
    pub api_outage: ApiOutage,
    /// The longest a node keeps answering on its peers' promises after its
    /// last successful renewal (the same on every node).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub max_hold: Duration,
    /// UDP address the agents talk on (promises and fences), on the node
    /// (not MetalLB's 7946); peers are reached on this port.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7475")]
    pub peer_addr: std::net::SocketAddr,
    /// File holding the key that authenticates the agents' messages;
    /// without it the Secret `speaker-peer-key` in --namespace is used
    /// (created with a random key when missing).
    #[arg(long, value_name = "FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// How often this node connects to its own ready endpoints of each
    /// VIP it answers for (externalTrafficPolicy: Local Services); 0 turns
    /// the local endpoint probe off. Per Service:
    /// `speaker.metal/endpoint-probe: "off"`.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub endpoint_probe_period: Duration,
    /// Failed probes in a row, on every endpoint of a VIP, after which
    /// this node hands the VIP over.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub endpoint_probe_failures: u32,
    /// Successful probes in a row, on one endpoint, after which this node
    /// may announce the VIP again.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub endpoint_probe_successes: u32,
    /// On SIGTERM: `keep` leaves the VIPs answered and the data plane
    /// attached for the agent's successor on this node to adopt (an
    /// upgrade or restart moves nothing); `handover` hands every VIP to
    /// another node; `auto` keeps inside Kubernetes unless this Node is
    /// leaving (cordoned, not Ready, being deleted, or tainted for
    /// removal), and hands over elsewhere. SIGINT always hands over.
    #[arg(long, value_enum, default_value = "auto")]
    pub on_sigterm: OnSigterm,
    /// After a `keep` stop, how long the VIPs stay answered with no
    /// successor; other nodes wait 10% longer before taking over.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub restart_hold: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What SIGTERM means to the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnSigterm {
    Auto,
    Keep,
    Handover,
}

/// The local endpoint probe's settings (agent/probe.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Zero: off.
    pub period: Duration,
    pub failures: u32,
    pub successes: u32,
}

/// What a node does while its renewals fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiOutage {
    Hold,
    Release,
}

/// `speaker agent`, checked.
#[derive(Debug)]
pub struct AgentConfig {
    pub node: String,
    pub namespace: String,
    /// Where IPAddressPools and L2Advertisements are read from.
    pub config_namespace: String,
    /// Where VIPs are announced when an L2Advertisement names no interfaces.
    pub default_links: Vec<Link>,
    pub settings: Settings,
    pub timings: Timings,
    pub burst: BurstSettings,
    pub bpffs: PathBuf,
    pub xdp_mode: AttachMode,
    pub metrics_addr: std::net::SocketAddr,
    /// Where the agents talk (holding through API outages); `None` with
    /// `--api-outage=release`.
    pub peer_addr: Option<std::net::SocketAddr>,
    pub peer_key_file: Option<PathBuf>,
    pub probe: ProbeSettings,
    pub on_sigterm: OnSigterm,
}

impl AgentArgs {
    pub fn into_config(self) -> Result<AgentConfig, ConfigError> {
        let timings = Timings {
            lease_duration: self.lease_duration,
            renew_interval: self.renew_interval,
            renew_deadline: self.renew_deadline,
            stagger: self.stagger,
            max_hold: match self.api_outage {
                ApiOutage::Hold => self.max_hold,
                ApiOutage::Release => Duration::ZERO,
            },
            restart_hold: self.restart_hold,
            ..Timings::default()
        };
        timings
            .validate()
            .map_err(|e| ConfigError::Timing(e.to_string()))?;
        let default_links = self
            .interfaces
            .iter()
            .map(|spec| Link::lookup(spec))
            .collect::<Result<_, _>>()?;
        Ok(AgentConfig {
            node: self.node_name,
            namespace: self.namespace,
            config_namespace: self.config_namespace,
            default_links,
            settings: Settings {
                load_balancer_class: self.load_balancer_class,
                announce_classless: self.announce_classless,
            },
            timings,
            burst: BurstSettings {
                count: self.common.garp_count,
                interval: self.common.garp_interval,
            },
            bpffs: self.common.bpffs,
            xdp_mode: self.common.xdp_mode,
            metrics_addr: self.metrics_addr,
            peer_addr: (self.api_outage == ApiOutage::Hold).then_some(self.peer_addr),
            peer_key_file: self.peer_key_file,
            probe: ProbeSettings {
                period: self.endpoint_probe_period,
                failures: self.endpoint_probe_failures,
                successes: self.endpoint_probe_successes,
            },
            on_sigterm: self.on_sigterm,
        })
    }
}

/// `speaker inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// bpffs folder the running agent pinned its maps in.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options every mode shares.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// bpffs folder the maps are pinned in.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs: PathBuf,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: AttachMode,
    /// Gratuitous ARP rounds sent on takeover (each round: a request and a reply).
    #[arg(long, value_name = "N", default_value_t = BurstSettings::default().count)]
    pub garp_count: u32,
    /// Time between gratuitous ARP rounds.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub garp_interval: Duration,
}

#[derive(Debug)]
pub struct StaticConfig {
    pub links: Vec<Link>,
    pub vips: Vec<StaticVip>,
    pub hold_time: Duration,
    pub refresh_interval: Duration,
    pub burst: BurstSettings,
    pub bpffs: PathBuf,
    pub xdp_mode: AttachMode,
}

/// A VIP and the links (indices into `StaticConfig::links`) it is answered on.
#[derive(Debug, PartialEq, Eq)]
pub struct StaticVip {
    pub addr: IpAddr,
    pub links: Vec<usize>,
}

impl StaticConfig {
    pub fn from_args(args: StaticArgs) -> Result<Self, ConfigError> {
        if args.refresh_interval.is_zero() {
            return Err(ConfigError::Timing(
                "--refresh-interval must be above zero".into(),
            ));
        }
        if args.hold_time <= args.refresh_interval {
            return Err(ConfigError::Timing(format!(
                "--hold-time ({:?}) must be longer than --refresh-interval ({:?}), or VIPs lapse between refreshes",
                args.hold_time, args.refresh_interval
            )));
        }
        let mut links: Vec<Link> = Vec::new();
        let mut link_index = |spec: &str| -> Result<usize, ConfigError> {
            let link = Link::lookup(spec)?;
            Ok(match links.iter().position(|l| *l == link) {
                Some(i) => i,
                None => {
                    links.push(link);
                    links.len() - 1
                }
            })
        };
        let default_links = args
            .interfaces
            .iter()
            .map(|spec| link_index(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let mut vips: Vec<StaticVip> = Vec::new();
        for arg in &args.vips {
            check_vip(arg.addr)?;
            let mut on = match arg.links.is_empty() {
                true => default_links.clone(),
                false => arg
                    .links
                    .iter()
                    .map(|spec| link_index(spec))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            if on.is_empty() {
                return Err(ConfigError::Vip(
                    arg.addr,
                    "no link to answer on (give --interface, or ADDR@IF)",
                ));
            }
            on.sort_unstable();
            on.dedup();
            match vips.iter_mut().find(|v| v.addr == arg.addr) {
                Some(v) => {
                    v.links.extend(on);
                    v.links.sort_unstable();
                    v.links.dedup();
                }
                None => vips.push(StaticVip {
                    addr: arg.addr,
                    links: on,
                }),
            }
        }
        Ok(Self {
            links,
            vips,
            hold_time: args.hold_time,
            refresh_interval: args.refresh_interval,
            burst: BurstSettings {
                count: args.common.garp_count,
                interval: args.common.garp_interval,
            },
            bpffs: args.common.bpffs,
            xdp_mode: args.common.xdp_mode,
        })
    }
}

/// `speaker controller`: gives LoadBalancer Services their addresses from
/// the IPAddressPools, as MetalLB's controller does. Run two or more: one
/// is active (it holds a Lease), the others stand by.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Namespace of the controller's Lease.
    #[arg(long, default_value = "speaker-system")]
    pub namespace: String,
    /// Namespace the IPAddressPools are read from (MetalLB's, so a MetalLB
    /// install's pools work as they are).
    #[arg(long, default_value = "metallb-system", value_name = "NAMESPACE")]
    pub config_namespace: String,
    /// Give addresses to Services of this spec.loadBalancerClass.
    #[arg(long, value_name = "CLASS")]
    pub load_balancer_class: Option<String>,
    /// Give addresses to Services without a loadBalancerClass.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub announce_classless: bool,
    /// How long the Lease must go unrenewed before a standby takes over.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the active controller renews its Lease.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub renew_interval: Duration,
    /// How long after its last successful renewal was sent the active
    /// controller keeps writing.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// Address of the /metrics, /healthz and /readyz endpoints (not
    /// MetalLB's 7472, so both can run during a migration).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7473")]
    pub metrics_addr: std::net::SocketAddr,
}

/// `speaker controller`, checked.
#[derive(Debug)]
pub struct ControllerConfig {
    pub namespace: String,
    pub config_namespace: String,
    pub settings: Settings,
    /// Of the controller's Lease (`stagger` unused).
    pub timings: Timings,
    pub metrics_addr: std::net::SocketAddr,
}

impl ControllerArgs {
    pub fn into_config(self) -> Result<ControllerConfig, ConfigError> {
        let timings = Timings {
            lease_duration: self.lease_duration,
            renew_interval: self.renew_interval,
            renew_deadline: self.renew_deadline,
            ..Timings::default()
        };
        timings
            .validate()
            .map_err(|e| ConfigError::Timing(e.to_string()))?;
        Ok(ControllerConfig {
            namespace: self.namespace,
            config_namespace: self.config_namespace,
            settings: Settings {
                load_balancer_class: self.load_balancer_class,
                announce_classless: self.announce_classless,
            },
            timings,
            metrics_addr: self.metrics_addr,
        })
    }
}

/// A VIP must be an address a host may own: the data plane never answers
/// for the others, so accepting them would announce nothing.
pub fn check_vip(vip: IpAddr) -> Result<(), ConfigError> {
    let reason = match vip {
        IpAddr::V4(v4) => {
            if v4.octets()[0] == 0 {
                "is in 0.0.0.0/8"
            } else if v4.is_loopback() {
                "is a loopback address"
            } else if v4.is_multicast() {
                "is a multicast address"
            } else if v4.is_broadcast() {
                "is the broadcast address"
            } else {
                return Ok(());
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                "is the unspecified address"
            } else if v6.is_loopback() {
                "is a loopback address"
            } else if v6.is_multicast() {
                "is a multicast address"
            } else if v6.to_ipv4_mapped().is_some() {
                "is an IPv4-mapped address (give the IPv4 address)"
            } else {
                return Ok(());
            }
        }
    };
    Err(ConfigError::Vip(vip, reason))
}

/// Parses `1500ms`, `3s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 3s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn vip_classes() {
        assert!(check_vip("198.18.0.10".parse().unwrap()).is_ok());
        assert!(check_vip("2001:db8::10".parse().unwrap()).is_ok());
        #[rustfmt::skip]
        let bad = [
            "0.0.0.0", "0.1.2.3", "127.0.0.1", "224.0.0.1", "255.255.255.255",
            "::", "::1", "ff02::1", "::ffff:198.18.0.1",
        ];
        for bad in bad {
            let e = check_vip(bad.parse().unwrap()).unwrap_err();
            assert!(e.to_string().starts_with(&format!("VIP {bad}: ")), "{e}");
        }
    }
}
