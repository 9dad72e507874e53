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

fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The YAML files under `dir`, recursively, in a stable order.
fn yaml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|x| x == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The documents of a YAML stream, empty ones left out.
fn parse_stream(what: &str, text: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every document of every manifest in deploy/ (kustomization files
/// aside), with its file's name.
fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in yaml_files(&deploy_dir()) {
        if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let name = path.display().to_string();
        for doc in parse_stream(&name, &text) {
            out.push((name.clone(), doc));
        }
    }
    assert!(!out.is_empty());
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

/// `kubectl kustomize DIR`'s documents, as (kind, name) pairs.
fn rendered(dir: &str) -> BTreeSet<(String, String)> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
        .expect(
            "kubectl (Debian: kubernetes-client) must be installed; `cargo xtask test` installs it",
        );
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    parse_stream(dir, &text)
        .iter()
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                name.to_string(),
            )
        })
        .collect()
}

#[test]
fn the_kustomize_tree_renders_the_standalone_install_and_the_agent_alone() {
    let dir = deploy_dir();
    let all: BTreeSet<(String, String)> = documents()
        .iter()
        .filter(|(file, _)| !file.ends_with("example.yaml"))
        .map(|(_, d)| {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            (
                d["kind"].as_str().unwrap_or_default().to_string(),
                name.to_string(),
            )
        })
        .collect();
    let standalone = rendered(&dir.display().to_string());
    assert_eq!(
        standalone, all,
        "deploy/ renders every manifest but the example"
    );
    let alongside = rendered(&dir.join("alongside-metallb").display().to_string());
    let kinds: BTreeSet<&str> = alongside.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains("DaemonSet"), "{alongside:?}");
    assert!(
        !kinds.contains("CustomResourceDefinition") && !kinds.contains("Deployment"),
        "alongside MetalLB: the agent only, {alongside:?}"
    );
}

/// The metric names a page exposes (counters with their `_total`,
/// histograms with their series).
fn exposed(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, kind) = (words.next()?, words.next()?);
            Some(match kind {
                "counter" => vec![format!("{name}_total")],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .map(|suffix| format!("{name}{suffix}"))
                    .to_vec(),
                _ => vec![name.to_string()],
            })
        })
        .flatten()
        .collect()
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_we_export() {
    use speaker::{
        allocation::{FamilyCount, PoolCount},
        metrics::{ControllerMetrics, Metrics, Page},
    };
    // A label set in every family: empty families print nothing.
    let ip: std::net::IpAddr = "198.18.0.10".parse().expect("ip");
    let mut agent = Metrics {
        xdp: Some(Default::default()),
        announced: vec![("default/web".into(), ip)],
        vips: [(ip, Default::default())].into(),
        conflicts: [(ip, 1)].into(),
        stopped: [(speaker::election::Lost::Handover, 1)].into(),
        ..Metrics::default()
    };
    agent.took_over(
        speaker::election::Gained::Takeover,
        std::time::Duration::from_secs(2),
    );
    let controller = ControllerMetrics {
        pools: vec![PoolCount {
            pool: "main".into(),
            ipv4: FamilyCount::default(),
            ipv6: FamilyCount::default(),
        }],
        refusals: [("pool_exhausted", 1)].into(),
        ..ControllerMetrics::default()
    };
    let mut names = exposed(&agent.render());
    names.extend(exposed(&controller.render()));
    let path = deploy_dir().join("grafana/speaker.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            // PromQL words that name a metric: our prefixes.
            let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            for word in words.filter(|w| w.starts_with("speaker_") || w.starts_with("metallb_")) {
                assert!(
                    names.contains(word),
                    "panel {:?} queries {word}, which nothing exports; exported: {names:?}",
                    panel["title"]
                );
            }
        }
    }
}
