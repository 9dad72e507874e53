//! MetalLB's `metallb.io/v1beta1` `IPAddressPool` and `L2Advertisement`,
//! field for field, so an existing MetalLB configuration is read unchanged.
//! Unknown spec fields (a newer MetalLB's) are kept aside, never rejected,
//! so the object still works and the field is reported as not honoured.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// A pool of addresses LoadBalancer Services get their VIPs from.
#[derive(kube::CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    namespaced,
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDRs (`198.18.0.0/28`) or inclusive ranges (`198.18.1.10-198.18.1.20`).
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    #[serde(
        rename = "avoidBuggyIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub avoid_buggy_i_ps: Option<bool>,
    /// Allocation preferences, kept verbatim so that a malformed one is
    /// reported on the pool instead of hiding the whole object from a
    /// watch; read it with [`IPAddressPoolSpec::service_allocation`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<serde_json::Value>,
    /// Fields this speaker does not know.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl IPAddressPoolSpec {
    /// `serviceAllocation`, typed.
    pub fn service_allocation(&self) -> Result<Option<ServiceAllocation>, serde_json::Error> {
        self.service_allocation
            .as_ref()
            .map(ServiceAllocation::deserialize)
            .transpose()
    }

    /// The paths of the fields this speaker does not know, for a report.
    pub fn unsupported(&self) -> Vec<String> {
        let nested = self
            .service_allocation()
            .ok()
            .flatten()
            .map(|a| a.unknown)
            .unwrap_or_default();
        let top = self.unknown.keys().map(|k| format!("spec.{k}"));
        let nested = nested
            .into_keys()
            .map(|k| format!("spec.serviceAllocation.{k}"));
        top.chain(nested).collect()
    }
}

/// The report for a field this speaker does not know: it is not honoured,
/// and the user must hear so.
pub fn unsupported_field(path: &str) -> String {
    format!("field {path} is not supported by this speaker and has no effect")
}

/// Which Services a pool serves when none asked for it, and in which order
/// pools are tried.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower is tried first; absent (or 0) comes after every priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Counters MetalLB's controller writes; read-only for us.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    #[serde(
        default,
        rename = "assignedIPv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_ipv4: Option<i64>,
    #[serde(
        default,
        rename = "assignedIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_ipv6: Option<i64>,
    #[serde(
        default,
        rename = "availableIPv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_ipv4: Option<i64>,
    #[serde(
        default,
        rename = "availableIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_ipv6: Option<i64>,
}

/// Which pools are announced in Layer 2 mode, from which nodes, on which
/// interfaces. Every field may be absent: MetalLB's documented minimal
/// advertisement has no `spec` at all and announces every pool everywhere.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address_pools: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address_pool_selectors: Option<Vec<LabelSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selectors: Option<Vec<LabelSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// MetalLB v0.16: only Services matching one of these (absent or
    /// empty: every Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selectors: Option<Vec<LabelSelector>>,
    /// Fields this speaker does not know.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl L2AdvertisementSpec {
    /// The paths of the fields this speaker does not know, for a report.
    pub fn unsupported(&self) -> Vec<String> {
        self.unknown.keys().map(|k| format!("spec.{k}")).collect()
    }
}

/// The `L2Advertisement` object. Written by hand rather than with
/// `kube::CustomResource`, whose root type requires `spec`: MetalLB's CRD
/// does not, and `kind: L2Advertisement` with only metadata is the
/// configuration MetalLB's documentation shows first.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
pub struct L2Advertisement {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: L2AdvertisementSpec,
}

impl L2Advertisement {
    /// An advertisement named `name`, like the derived `IPAddressPool::new`.
    pub fn new(name: &str, spec: L2AdvertisementSpec) -> Self {
        let metadata = ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        };
        Self { metadata, spec }
    }
}

// `kube::Resource` (and so `Api<L2Advertisement>`) comes from kube's
// blanket impl over these two k8s-openapi traits.
impl k8s_openapi::Resource for L2Advertisement {
    const API_VERSION: &'static str = "metallb.io/v1beta1";
    const GROUP: &'static str = "metallb.io";
    const KIND: &'static str = "L2Advertisement";
    const VERSION: &'static str = "v1beta1";
    const URL_PATH_SEGMENT: &'static str = "l2advertisements";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for L2Advertisement {
    const LIST_KIND: &'static str = "L2AdvertisementList";
}

impl k8s_openapi::Metadata for L2Advertisement {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

// Serialised with `apiVersion` and `kind`, as the API server requires on
// create and apply.
impl Serialize for L2Advertisement {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use k8s_openapi::Resource as _;
        use serde::ser::SerializeStruct as _;
        let mut obj = ser.serialize_struct("L2Advertisement", 4)?;
        obj.serialize_field("apiVersion", Self::API_VERSION)?;
        obj.serialize_field("kind", Self::KIND)?;
        obj.serialize_field("metadata", &self.metadata)?;
        obj.serialize_field("spec", &self.spec)?;
        obj.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource as _;
    use serde_json::json;

    #[test]
    fn metallb_yaml_deserialises_unchanged() {
        let pool: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": "first", "namespace": "metallb-system"},
            "spec": {
                "addresses": ["198.18.0.0/28", "198.18.1.10-198.18.1.20"],
                "autoAssign": false,
                "avoidBuggyIPs": true,
                "serviceAllocation": {"priority": 50, "namespaces": ["a"]},
                "someFutureField": 1
            },
            "status": {"assignedIPv4": 1, "availableIPv4": 15}
        }))
        .expect("pool");
        assert_eq!(pool.spec.addresses.len(), 2);
        assert_eq!(pool.spec.auto_assign, Some(false));
        assert_eq!(pool.spec.avoid_buggy_i_ps, Some(true));
        assert_eq!(
            pool.spec.service_allocation,
            Some(json!({"priority": 50, "namespaces": ["a"]}))
        );
        assert_eq!(pool.status.and_then(|s| s.available_ipv4), Some(15));
        assert_eq!(pool.spec.unsupported(), ["spec.someFutureField"]);

        let adv: L2Advertisement = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": "l2", "namespace": "metallb-system"},
            "spec": {
                "ipAddressPools": ["first"],
                "ipAddressPoolSelectors": [{"matchLabels": {"a": "b"}}],
                "nodeSelectors": [{"matchExpressions": [{"key": "k", "operator": "Exists"}]}],
                "interfaces": ["eth0"],
                "serviceSelectors": [{"matchLabels": {"app": "web"}}],
                "unknown": true
            },
            "status": {}
        }))
        .expect("advertisement");
        assert_eq!(adv.spec.ip_address_pools, Some(vec!["first".to_owned()]));
        assert_eq!(adv.spec.interfaces, Some(vec!["eth0".to_owned()]));
        assert_eq!(adv.spec.unsupported(), ["spec.unknown"]);
        assert_eq!(adv.spec.node_selectors.map(|s| s.len()), Some(1));
        assert_eq!(adv.spec.service_selectors.map(|s| s.len()), Some(1));
    }

    #[test]
    fn service_allocation_reads_typed_or_reports_why_not() {
        let mut spec: IPAddressPoolSpec = serde_json::from_value(json!({
            "addresses": ["198.18.0.0/28"],
            "serviceAllocation": {
                "priority": 50,
                "namespaces": ["a"],
                "namespaceSelectors": [{"matchLabels": {"team": "x"}}],
                "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "Exists"}]}],
                "future": true
            }
        }))
        .expect("spec");
        let alloc = spec.service_allocation().expect("typed").expect("present");
        assert_eq!(alloc.priority, Some(50));
        assert_eq!(alloc.namespaces, vec!["a".to_owned()]);
        assert_eq!(alloc.namespace_selectors.len(), 1);
        assert_eq!(alloc.service_selectors.len(), 1);
        assert_eq!(spec.unsupported(), ["spec.serviceAllocation.future"]);

        spec.service_allocation = None;
        assert_eq!(spec.service_allocation().expect("absent"), None);
        spec.service_allocation = Some(json!({"priority": "high"}));
        assert!(spec.service_allocation().is_err());
    }

    #[test]
    fn l2advertisement_without_spec_deserialises() {
        let adv: L2Advertisement = serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": "example", "namespace": "metallb-system"}
        }))
        .expect("advertisement");
        assert_eq!(adv.spec, L2AdvertisementSpec::default());
    }

    #[test]
    fn resource_metadata_and_round_trip() {
        assert_eq!(IPAddressPool::api_version(&()), "metallb.io/v1beta1");
        assert_eq!(IPAddressPool::plural(&()), "ipaddresspools");
        assert_eq!(L2Advertisement::api_version(&()), "metallb.io/v1beta1");
        assert_eq!(L2Advertisement::plural(&()), "l2advertisements");
        assert_eq!(L2Advertisement::kind(&()), "L2Advertisement");

        let adv = L2Advertisement::new("l2", L2AdvertisementSpec::default());
        let value = serde_json::to_value(&adv).expect("serialise");
        assert_eq!(value["apiVersion"], "metallb.io/v1beta1");
        assert_eq!(value["kind"], "L2Advertisement");
        let back: L2Advertisement = serde_json::from_value(value).expect("deserialise");
        assert_eq!(back, adv);

        let pool = IPAddressPool::new("p", IPAddressPoolSpec::default());
        let value = serde_json::to_value(&pool).expect("serialise");
        assert_eq!(value["kind"], "IPAddressPool");
        let back: IPAddressPool = serde_json::from_value(value).expect("deserialise");
        assert_eq!(back, pool);
    }
}
