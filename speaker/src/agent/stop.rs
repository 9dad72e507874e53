//! What a SIGTERM means: a restart of the agent on this node (keep the
//! VIPs answered for the successor to adopt) or the node leaving (hand
//! them over). Inside Kubernetes, a SIGTERM is most often a DaemonSet
//! rolling update or a pod restart; the Node object tells when it is not.

use k8s_openapi::api::core::v1::Node;

use crate::{config::OnSigterm, eligibility};

/// Taints that say a node is going away.
const LEAVING_TAINTS: [&str; 4] = [
    "ToBeDeletedByClusterAutoscaler",
    "node.kubernetes.io/out-of-service",
    "node.kubernetes.io/unschedulable",
    "karpenter.sh/disrupted",
];

/// Whether a SIGTERM keeps the VIPs for a successor: always with `keep`,
/// never with `handover`; with `auto`, inside Kubernetes (`in_cluster`)
/// when this node, as last seen, is not leaving.
pub fn keeps(on: OnSigterm, in_cluster: bool, node: Option<&Node>) -> bool {
    match on {
        OnSigterm::Keep => true,
        OnSigterm::Handover => false,
        OnSigterm::Auto => in_cluster && node.is_some_and(|n| !leaving(n)),
    }
}

/// Being deleted, cordoned (a drain), tainted for removal, not Ready, or
/// excluded from load balancers: its VIPs belong elsewhere.
fn leaving(node: &Node) -> bool {
    let spec = node.spec.as_ref();
    node.metadata.deletion_timestamp.is_some()
        || spec.and_then(|s| s.unschedulable).unwrap_or(false)
        || spec
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|t| LEAVING_TAINTS.contains(&t.key.as_str()))
        || !eligibility::node_may_announce(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(extra: serde_json::Value) -> Node {
        let mut n = serde_json::json!({
            "metadata": {"name": "a"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        if let (Some(n), Some(e)) = (n.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                n.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(n).expect("a Node")
    }

    #[test]
    fn auto_keeps_for_a_healthy_node_in_kubernetes_only() {
        let healthy = node(serde_json::json!({}));
        assert!(keeps(OnSigterm::Auto, true, Some(&healthy)));
        assert!(!keeps(OnSigterm::Auto, false, Some(&healthy)));
        assert!(!keeps(OnSigterm::Auto, true, None));
        assert!(keeps(OnSigterm::Keep, false, None));
        assert!(!keeps(OnSigterm::Handover, true, Some(&healthy)));
    }

    #[test]
    fn a_node_leaving_is_handed_over() {
        for leaving in [
            serde_json::json!({"spec": {"unschedulable": true}}),
            serde_json::json!({"spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}}),
            serde_json::json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ] {
            let n = node(leaving.clone());
            assert!(!keeps(OnSigterm::Auto, true, Some(&n)), "{leaving}");
        }
    }
}
