//! What this node's local endpoint probe checks for each VIP: the ready
//! endpoints on this node of the VIP's `externalTrafficPolicy: Local`
//! Services, one TCP address per endpoint address and TCP port. Only
//! `Local` Services: under `Cluster`, kube-proxy forwards to endpoints on
//! other nodes, so a dead local endpoint does not make this node unable to
//! serve. A Service annotated `speaker.metal/endpoint-probe: "off"` is
//! left to the kubelet. Pure, like the plan.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use super::{SERVICE_NAME_LABEL, Settings, Snapshot, announced_service, labels};

/// The annotation that turns the probe off for one Service.
pub const PROBE_ANNOTATION: &str = "speaker.metal/endpoint-probe";

/// For each VIP with something to probe on `node`, the addresses to
/// connect to.
pub fn probe_targets(
    snapshot: &Snapshot,
    settings: &Settings,
    node: &str,
) -> BTreeMap<IpAddr, BTreeSet<SocketAddr>> {
    let mut out: BTreeMap<IpAddr, BTreeSet<SocketAddr>> = BTreeMap::new();
    for svc in &snapshot.services {
        let off = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROBE_ANNOTATION))
            .is_some_and(|v| v == "off");
        // Problems are the plan's to report.
        let Some(announced) = announced_service(svc, settings, &mut Vec::new()) else {
            continue;
        };
        if off || !announced.local || announced.ips.is_empty() {
            continue;
        }
        let mut targets = BTreeSet::new();
        let slices = snapshot.endpoint_slices.iter().filter(|s| {
            s.metadata.namespace.as_deref().unwrap_or_default() == announced.namespace
                && labels(&s.metadata)
                    .get(SERVICE_NAME_LABEL)
                    .map(String::as_str)
                    == Some(announced.name)
        });
        for slice in slices {
            let ports: Vec<u16> = slice
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter_map(|p| u16::try_from(p.port?).ok())
                .collect();
            let here = slice.endpoints.iter().flatten().filter(|e| {
                e.node_name.as_deref() == Some(node)
                    && e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
            });
            for endpoint in here {
                for addr in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                {
                    targets.extend(ports.iter().map(|p| SocketAddr::new(addr, *p)));
                }
            }
        }
        if targets.is_empty() {
            continue;
        }
        for ip in &announced.ips {
            out.entry(*ip).or_default().extend(targets.iter().copied());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(name: &str, policy: &str, ip: &str, probe: Option<&str>) -> serde_json::Value {
        let annotations = probe.map_or(json!({}), |p| json!({ PROBE_ANNOTATION: p }));
        json!({
            "metadata": {"namespace": "web", "name": name, "annotations": annotations},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}
        })
    }

    fn slice(service: &str) -> serde_json::Value {
        json!({
            "metadata": {"namespace": "web", "name": format!("{service}-1"),
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": "front-0"},
                {"addresses": ["10.0.0.2"], "nodeName": "front-0", "conditions": {"ready": false}},
                {"addresses": ["10.0.1.1"], "nodeName": "front-1"}
            ]
        })
    }

    #[test]
    fn ready_tcp_endpoints_here_of_local_services_not_turned_off() {
        let snapshot = Snapshot {
            services: [
                service("local", "Local", "198.18.0.10", None),
                service("cluster", "Cluster", "198.18.0.11", None),
                service("off", "Local", "198.18.0.12", Some("off")),
            ]
            .into_iter()
            .map(|s| serde_json::from_value(s).expect("service"))
            .collect(),
            endpoint_slices: ["local", "cluster", "off"]
                .into_iter()
                .map(|s| serde_json::from_value(slice(s)).expect("slice"))
                .collect(),
            ..Snapshot::default()
        };
        let settings = Settings {
            load_balancer_class: None,
            announce_classless: true,
        };
        let targets = probe_targets(&snapshot, &settings, "front-0");
        let want: BTreeSet<SocketAddr> = ["10.0.0.1:80".parse().expect("addr")].into();
        assert_eq!(
            targets,
            [("198.18.0.10".parse().expect("ip"), want)].into(),
            "only the ready TCP endpoint on this node, only for the Local Service"
        );
    }
}
