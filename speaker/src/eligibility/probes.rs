//! What the local endpoint probe checks (agent/probe.rs), part of the
//! plan: for each VIP and node, the ready endpoints on that node of the
//! VIP's `externalTrafficPolicy: Local` Services, one TCP address per
//! endpoint address and TCP port. Only `Local` Services: under `Cluster`,
//! kube-proxy forwards to endpoints on other nodes, so a dead local
//! endpoint does not make a node unable to serve. A Service annotated
//! `speaker.metal/endpoint-probe: "off"` is left to the kubelet.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The annotation that turns the probe off for one Service.
pub const PROBE_ANNOTATION: &str = "speaker.metal/endpoint-probe";

/// A Service's probe targets by node, from its EndpointSlices.
pub(super) fn targets<'a>(slices: &[&'a EndpointSlice]) -> BTreeMap<&'a str, BTreeSet<SocketAddr>> {
    let mut out: BTreeMap<&str, BTreeSet<SocketAddr>> = BTreeMap::new();
    for slice in slices {
        let ports: Vec<u16> = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.port?).ok())
            .collect();
        let ready = slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
        for endpoint in ready {
            let Some(node) = endpoint.node_name.as_deref() else {
                continue;
            };
            let addrs = endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok());
            for addr in addrs {
                let at = out.entry(node).or_default();
                at.extend(ports.iter().map(|p| SocketAddr::new(addr, *p)));
            }
        }
    }
    out.retain(|_, t| !t.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::eligibility::{
        SERVICE_NAME_LABEL, plan,
        tests::{classless, cluster, ip},
    };

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
                {"addresses": ["10.0.0.1"], "nodeName": "a"},
                {"addresses": ["10.0.0.2"], "nodeName": "a", "conditions": {"ready": false}},
                {"addresses": ["10.0.1.1"]}
            ]
        })
    }

    #[test]
    fn ready_tcp_endpoints_of_local_services_not_turned_off() {
        let mut snapshot = cluster();
        snapshot.services = [
            service("local", "Local", "198.18.0.10", None),
            service("cluster", "Cluster", "198.18.0.11", None),
            service("off", "Local", "198.18.0.12", Some("off")),
        ]
        .into_iter()
        .map(|s| serde_json::from_value(s).expect("service"))
        .collect();
        snapshot.endpoint_slices = ["local", "cluster", "off"]
            .into_iter()
            .map(|s| serde_json::from_value(slice(s)).expect("slice"))
            .collect();
        let plan = plan(&snapshot, &classless());
        let probes = |vip: &str| plan.vips.get(&ip(vip)).map(|p| p.probes.clone());
        let want: BTreeSet<SocketAddr> = ["10.0.0.1:80".parse().expect("addr")].into();
        assert_eq!(
            probes("198.18.0.10"),
            Some([("a".to_string(), want)].into()),
            "only ready TCP endpoints, by node"
        );
        assert_eq!(probes("198.18.0.11"), Some(BTreeMap::new()), "Cluster");
        assert_eq!(probes("198.18.0.12"), Some(BTreeMap::new()), "turned off");
    }
}
