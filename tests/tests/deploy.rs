//! deploy/ as a cluster would read it: every manifest parses into its
//! Kubernetes type, and RBAC grants the agent and the controller exactly
//! the accesses the code lists (`speaker::k8s::access`), no more: the
//! tests against the API stand-in check that every request is in those
//! lists.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{Namespace, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use serde_json::Value;
use serde_json::from_value;
use speaker::{
    k8s::access::{AGENT, CONTROLLER},
    metallb::{IPAddressPool, L2Advertisement},
};
use speaker_tests::rbac::{Grant, grants};

const OWN: &str = "speaker-system";
const CONFIG: &str = "metallb-system";

/// Every document of every manifest in deploy/, with its file's name.
fn documents() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            out.push((name.clone().unwrap_or_default(), doc));
        }
    }
    out
}

fn parses<T: for<'de> k8s_openapi::serde::Deserialize<'de>>(file: &str, doc: &Value) {
    if let Err(e) = from_value::<T>(doc.clone()) {
        panic!("{file}: {} {}: {e}", doc["kind"], doc["metadata"]["name"]);
    }
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    for (file, doc) in documents() {
        match doc["kind"].as_str().unwrap_or_default() {
            "Namespace" => parses::<Namespace>(&file, &doc),
            "ServiceAccount" => parses::<ServiceAccount>(&file, &doc),
            "Service" => parses::<Service>(&file, &doc),
            "ClusterRole" => parses::<ClusterRole>(&file, &doc),
            "ClusterRoleBinding" => parses::<ClusterRoleBinding>(&file, &doc),
            "Role" => parses::<Role>(&file, &doc),
            "RoleBinding" => parses::<RoleBinding>(&file, &doc),
            "DaemonSet" => parses::<DaemonSet>(&file, &doc),
            "Deployment" => parses::<Deployment>(&file, &doc),
            "CustomResourceDefinition" => parses::<CustomResourceDefinition>(&file, &doc),
            "IPAddressPool" => parses::<IPAddressPool>(&file, &doc),
            "L2Advertisement" => parses::<L2Advertisement>(&file, &doc),
            other => panic!("{file}: a {other:?} this test does not know"),
        }
    }
}

/// What deploy/ grants the service account `account` (in `speaker-system`).
fn granted(account: &str) -> BTreeSet<Grant> {
    let docs: Vec<Value> = documents().into_iter().map(|(_, d)| d).collect();
    let of_kind = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let rules = |kind: &'static str, name: &str, ns: Option<&str>| -> Vec<PolicyRule> {
        let role = of_kind(kind)
            .find(|d| d["metadata"]["name"] == name && d["metadata"]["namespace"].as_str() == ns)
            .unwrap_or_else(|| panic!("{kind} {name} in {ns:?} is bound but missing"));
        from_value(role["rules"].clone()).expect("rules")
    };
    let binds =
        |b: &&Value| {
            b["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == OWN
            })
        };
    let mut out = BTreeSet::new();
    let mut add = |rules: Vec<PolicyRule>, ns: Option<&str>| {
        for r in rules {
            let groups = r.api_groups.unwrap_or_default();
            let resources = r.resources.unwrap_or_default();
            for g in &groups {
                for res in &resources {
                    for v in &r.verbs {
                        out.insert((g.clone(), res.clone(), v.clone(), ns.map(str::to_string)));
                    }
                }
            }
        }
    };
    for b in of_kind("ClusterRoleBinding").filter(binds) {
        let role = b["roleRef"]["name"].as_str().unwrap_or_default();
        add(rules("ClusterRole", role, None), None);
    }
    for b in of_kind("RoleBinding").filter(binds) {
        let ns = b["metadata"]["namespace"].as_str();
        let role = b["roleRef"]["name"].as_str().unwrap_or_default();
        let found = match b["roleRef"]["kind"].as_str() {
            Some("Role") => rules("Role", role, ns),
            _ => rules("ClusterRole", role, None),
        };
        add(found, ns);
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_code_uses() {
    for (account, list) in [("speaker", AGENT), ("speaker-controller", CONTROLLER)] {
        let want = grants(list, OWN, CONFIG);
        let have = granted(account);
        let missing: Vec<_> = want.difference(&have).collect();
        let extra: Vec<_> = have.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{account}: deploy/ lacks {missing:#?}\nand grants more: {extra:#?}"
        );
    }
}
