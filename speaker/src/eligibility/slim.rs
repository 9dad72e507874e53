//! What the agent keeps of each watched object: only the fields the plan
//! (and the stop decision, and the peers' addresses) read. A Node's
//! heartbeat, an object's managed fields, an endpoint's target reference
//! and hints are dropped as they arrive, so the caches stay small and a
//! change to a field nobody reads compares equal and costs nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeCondition, NodeSpec,
    NodeStatus, Service, ServiceSpec, ServiceStatus, Taint,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{SERVICE_NAME_LABEL, Settings, probes::PROBE_ANNOTATION};

/// Name, namespace, and the labels and annotations in `keep` (all labels
/// when `keep_labels` is `None`).
fn meta(m: &ObjectMeta, keep_labels: Option<&str>, keep_annotation: Option<&str>) -> ObjectMeta {
    let pick = |map: &Option<BTreeMap<String, String>>, key: Option<&str>| {
        let map = map.as_ref()?;
        let kept: BTreeMap<String, String> = match key {
            None => map.clone(),
            Some(k) => map
                .iter()
                .filter(|(have, _)| *have == k)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        (!kept.is_empty()).then_some(kept)
    };
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        labels: pick(&m.labels, keep_labels),
        annotations: keep_annotation.and_then(|k| pick(&m.annotations, Some(k))),
        ..ObjectMeta::default()
    }
}

/// A Service of ours (a LoadBalancer of our class), as the plan reads it;
/// `None` for every other Service, which the agent does not keep.
pub fn service(svc: &Service, settings: &Settings) -> Option<Service> {
    if !settings.selects(svc) {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let ingress: Vec<LoadBalancerIngress> = super::ingress(svc)
        .iter()
        .filter(|i| i.ip.is_some())
        .map(|i| LoadBalancerIngress {
            ip: i.ip.clone(),
            ..LoadBalancerIngress::default()
        })
        .collect();
    Some(Service {
        metadata: meta(&svc.metadata, None, Some(PROBE_ANNOTATION)),
        spec: Some(ServiceSpec {
            type_: spec.type_.clone(),
            load_balancer_class: spec.load_balancer_class.clone(),
            external_traffic_policy: spec.external_traffic_policy.clone(),
            ..ServiceSpec::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(ingress),
            }),
            ..ServiceStatus::default()
        }),
    })
}

/// An EndpointSlice as the plan reads it: its Service, and each
/// endpoint's node, readiness and addresses, with the ports (the local
/// probe's targets).
pub fn slice(slice: &EndpointSlice) -> EndpointSlice {
    let endpoints = slice.endpoints.iter().flatten().map(|e| Endpoint {
        addresses: e.addresses.clone(),
        conditions: Some(EndpointConditions {
            ready: e.conditions.as_ref().and_then(|c| c.ready),
            ..EndpointConditions::default()
        }),
        node_name: e.node_name.clone(),
        ..Endpoint::default()
    });
    let ports = slice.ports.as_ref().map(|ports| {
        ports
            .iter()
            .map(|p| EndpointPort {
                port: p.port,
                protocol: p.protocol.clone(),
                ..EndpointPort::default()
            })
            .collect()
    });
    EndpointSlice {
        metadata: meta(&slice.metadata, Some(SERVICE_NAME_LABEL), None),
        address_type: String::new(),
        endpoints: Some(endpoints.collect()),
        ports,
    }
}

/// A Node as the agent reads it: its labels, addresses, the conditions
/// that decide whether it may announce, and what says it is leaving
/// (agent/stop.rs).
pub fn node(node: &Node) -> Node {
    let status = node.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_ref()).map(|cs| {
        cs.iter()
            .filter(|c| c.type_ == "Ready" || c.type_ == "NetworkUnavailable")
            .map(|c| NodeCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                ..NodeCondition::default()
            })
            .collect()
    });
    let addresses = status.and_then(|s| s.addresses.as_ref()).map(|a| {
        a.iter()
            .map(|a| NodeAddress {
                type_: a.type_.clone(),
                address: a.address.clone(),
            })
            .collect()
    });
    let spec = node.spec.as_ref().map(|s| NodeSpec {
        unschedulable: s.unschedulable,
        taints: s.taints.as_ref().map(|ts| {
            ts.iter()
                .map(|t| Taint {
                    key: t.key.clone(),
                    effect: t.effect.clone(),
                    ..Taint::default()
                })
                .collect()
        }),
        ..NodeSpec::default()
    });
    let mut metadata = meta(&node.metadata, None, None);
    metadata.deletion_timestamp = node.metadata.deletion_timestamp.clone();
    Node {
        metadata,
        spec,
        status: Some(NodeStatus {
            conditions,
            addresses,
            ..NodeStatus::default()
        }),
    }
}
