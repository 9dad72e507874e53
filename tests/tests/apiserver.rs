//! The Kubernetes API stand-in, driven by the real kube-rs client: if these
//! pass, the agent's kube-rs code sees the stand-in as an API server.
//! No root needed. Every wait is bounded, so a broken stand-in fails fast.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    future::Future,
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::{
    coordination::v1::{Lease, LeaseSpec},
    core::v1::Service,
};
use kube::{
    Api, Client, Config,
    api::{
        DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
        WatchParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
    core::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher,
};
use serde_json::{Value, json};
use speaker_tests::{
    apiserver::{ApiServer, IP_ADDRESS_POOLS, LEASES, Listener, Match, Options},
    cluster::Cluster,
};

const NS: &str = "test";
/// The bound on any single wait for the stand-in.
const STEP: Duration = Duration::from_secs(5);

/// A stand-in with one listener and a kube-rs client loaded from the
/// kubeconfig the stand-in writes.
struct Env {
    server: ApiServer,
    listener: Listener,
    rt: tokio::runtime::Runtime,
    client: Client,
}

fn env() -> Env {
    let server = ApiServer::start_with(Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    });
    let listener = server.listener();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let client = client(&rt, &server, &listener, "env");
    Env {
        server,
        listener,
        rt,
        client,
    }
}

/// A kube-rs client through `listener`, configured the way the agent will
/// be: from a kubeconfig file.
fn client(
    rt: &tokio::runtime::Runtime,
    server: &ApiServer,
    listener: &Listener,
    tag: &str,
) -> Client {
    let path = std::env::temp_dir().join(format!(
        "apiserver-test-{}-{tag}-{}.kubeconfig",
        std::process::id(),
        listener.port()
    ));
    server
        .write_kubeconfig(listener, &path)
        .expect("write kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).expect("kube-rs reads the kubeconfig");
    let _ = std::fs::remove_file(&path);
    let config = rt
        .block_on(Config::from_custom_kubeconfig(
            kubeconfig,
            &KubeConfigOptions::default(),
        ))
        .expect("kube-rs accepts the kubeconfig");
    assert_eq!(
        config.cluster_url.to_string(),
        format!("{}/", listener.url())
    );
    let _guard = rt.enter();
    Client::try_from(config).expect("kube-rs client")
}

impl Env {
    /// Runs `f` on the test's runtime, failing the test after 10 s.
    fn run<F: Future>(&self, f: F) -> F::Output {
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), f).await })
            .expect("the test timed out")
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), NS)
    }
}

fn lease(name: &str, holder: &str, labels: &[(&str, &str)]) -> Lease {
    let mut l = Lease::default();
    l.metadata.name = Some(name.to_string());
    l.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    l.spec = Some(LeaseSpec {
        holder_identity: Some(holder.to_string()),
        ..LeaseSpec::default()
    });
    l
}

fn holder(l: &Lease) -> &str {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("")
}

fn name<K: kube::Resource>(o: &K) -> &str {
    o.meta().name.as_deref().unwrap_or("")
}

/// The HTTP code of an API error (panics on success or other errors).
fn api_code<T: Debug>(r: kube::Result<T>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next item of `stream` that `pick` maps to `Some`, within `STEP`.
async fn next_where<S, T, U>(stream: &mut S, what: &str, mut pick: impl FnMut(T) -> Option<U>) -> U
where
    S: Stream<Item = T> + Unpin,
{
    tokio::time::timeout(STEP, async {
        loop {
            let item = stream
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before {what}"));
            if let Some(u) = pick(item) {
                return u;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {STEP:?}"))
}

/// Raw watch events without bookmarks, as (type, name, holder).
fn raw(e: kube::Result<WatchEvent<Lease>>) -> Option<(&'static str, String, String)> {
    let (t, l) = match e.expect("watch event") {
        WatchEvent::Added(l) => ("ADDED", l),
        WatchEvent::Modified(l) => ("MODIFIED", l),
        WatchEvent::Deleted(l) => ("DELETED", l),
        WatchEvent::Bookmark(_) => return None,
        WatchEvent::Error(s) => panic!("watch error {s:?}"),
    };
    Some((t, name(&l).to_string(), holder(&l).to_string()))
}

#[test]
fn create_get_list_with_selectors() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let pp = PostParams::default();
        let a = api
            .create(&pp, &lease("a", "n1", &[("app", "x"), ("tier", "1")]))
            .await
            .expect("create a");
        api.create(&pp, &lease("b", "n2", &[("app", "y")]))
            .await
            .expect("create b");
        api.create(&pp, &lease("c", "n3", &[]))
            .await
            .expect("create c");
        Api::<Lease>::namespaced(env.client.clone(), "other")
            .create(&pp, &lease("d", "n4", &[("app", "x")]))
            .await
            .expect("create in another namespace");

        let m = &a.metadata;
        assert_eq!(m.namespace.as_deref(), Some(NS));
        assert!(m.uid.is_some() && m.creation_timestamp.is_some(), "{m:?}");
        assert_eq!(m.generation, Some(1));
        let got = api.get("a").await.expect("get a");
        assert_eq!(got.metadata.resource_version, m.resource_version);
        assert_eq!(holder(&got), "n1");

        assert_eq!(api_code(api.create(&pp, &lease("a", "n9", &[])).await), 409);
        assert_eq!(api_code(api.get("missing").await), 404);
        assert!(api.get_opt("missing").await.expect("get_opt").is_none());

        let mut generated = lease("", "n5", &[]);
        generated.metadata.name = None;
        generated.metadata.generate_name = Some("gen-".into());
        let made = api.create(&pp, &generated).await.expect("generateName");
        assert!(
            name(&made).starts_with("gen-") && name(&made).len() == 9,
            "{made:?}"
        );

        let cases = [
            ("app=x", vec!["a"]),
            ("app==x,tier=1", vec!["a"]),
            (
                "app!=x",
                vec!["b", "c", made.metadata.name.as_deref().unwrap_or("")],
            ),
            ("app in (x, y)", vec!["a", "b"]),
            (
                "app notin (x)",
                vec!["b", "c", made.metadata.name.as_deref().unwrap_or("")],
            ),
            ("app", vec!["a", "b"]),
            (
                "!app",
                vec!["c", made.metadata.name.as_deref().unwrap_or("")],
            ),
        ];
        for (selector, want) in cases {
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .expect(selector);
            let mut names: Vec<_> = list.items.iter().map(name).collect();
            let mut want = want;
            names.sort_unstable();
            want.sort_unstable();
            assert_eq!(names, want, "{selector}");
            assert!(list.metadata.resource_version.is_some());
        }
        let by_name = api
            .list(&ListParams::default().fields("metadata.name=b"))
            .await
            .expect("fields");
        assert_eq!(by_name.items.iter().map(name).collect::<Vec<_>>(), ["b"]);

        // All namespaces.
        let all = Api::<Lease>::all(env.client.clone())
            .list(&ListParams::default().labels("app=x"))
            .await
            .expect("list all");
        assert_eq!(all.items.len(), 2);
    });
}

#[test]
fn replace_with_stale_resource_version_conflicts() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let pp = PostParams::default();
        let old = api
            .create(&pp, &lease("l", "n1", &[]))
            .await
            .expect("create");
        let mut newer = old.clone();
        newer.spec = lease("l", "n2", &[]).spec;
        let newer = api.replace("l", &pp, &newer).await.expect("replace");
        assert_ne!(
            newer.metadata.resource_version,
            old.metadata.resource_version
        );
        assert_eq!(
            newer.metadata.generation,
            Some(2),
            "a spec change bumps generation"
        );

        let mut stale = old.clone();
        stale.spec = lease("l", "n3", &[]).spec;
        match api.replace("l", &pp, &stale).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
                assert!(
                    s.message.contains("the object has been modified"),
                    "{}",
                    s.message
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(holder(&api.get("l").await.expect("get")), "n2");

        // Without a resourceVersion the replace is unconditional.
        stale.metadata.resource_version = None;
        let forced = api
            .replace("l", &pp, &stale)
            .await
            .expect("unconditional replace");
        assert_eq!(holder(&forced), "n3");

        // A replace that changes nothing changes no version.
        let same = api.replace("l", &pp, &forced).await.expect("no-op replace");
        assert_eq!(
            same.metadata.resource_version,
            forced.metadata.resource_version
        );
        assert_eq!(
            api_code(api.replace("nope", &pp, &lease("nope", "x", &[])).await),
            404
        );
    });
}

#[test]
fn merge_json_and_apply_patches() {
    let env = env();
    let api = env.leases();
    env.run(async {
        api.create(&PostParams::default(), &lease("p", "n1", &[("keep", "1"), ("drop", "1")]))
            .await
            .expect("create");
        let pp = PatchParams::default();
        let merged = api
            .patch(
                "p",
                &pp,
                &Patch::Merge(json!({"metadata": {"labels": {"drop": null}}, "spec": {"holderIdentity": "n2"}})),
            )
            .await
            .expect("merge patch");
        assert_eq!(holder(&merged), "n2");
        assert_eq!(merged.metadata.labels, Some(BTreeMap::from([("keep".into(), "1".into())])));

        // A resourceVersion in a patch is a precondition.
        let stale = json!({"metadata": {"resourceVersion": "1"}, "spec": {"holderIdentity": "n9"}});
        assert_eq!(api_code(api.patch("p", &pp, &Patch::Merge(stale)).await), 409);

        let strategic = api
            .patch("p", &pp, &Patch::Strategic(json!({"spec": {"leaseDurationSeconds": 15}})))
            .await
            .expect("strategic merge patch");
        assert_eq!(strategic.spec.as_ref().and_then(|s| s.lease_duration_seconds), Some(15));

        // JSON patch (kube-rs needs an extra feature for Patch::Json; send it raw).
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/p");
        let json_patch = |ops: Value| {
            hyper::http::Request::patch(path.as_str())
                .header("content-type", "application/json-patch+json")
                .body(ops.to_string().into_bytes())
                .expect("request")
        };
        let patched: Lease = env
            .client
            .request(json_patch(json!([
                {"op": "test", "path": "/spec/holderIdentity", "value": "n2"},
                {"op": "replace", "path": "/spec/holderIdentity", "value": "n3"},
                {"op": "add", "path": "/metadata/labels/new", "value": "1"},
                {"op": "remove", "path": "/metadata/labels/keep"},
            ])))
            .await
            .expect("json patch");
        assert_eq!(holder(&patched), "n3");
        assert_eq!(patched.metadata.labels, Some(BTreeMap::from([("new".into(), "1".into())])));
        let failed = env
            .client
            .request::<Lease>(json_patch(json!([
                {"op": "test", "path": "/spec/holderIdentity", "value": "n2"},
                {"op": "replace", "path": "/spec/holderIdentity", "value": "n4"},
            ])))
            .await;
        assert_eq!(api_code(failed), 422);
        assert_eq!(holder(&api.get("p").await.expect("get")), "n3");

        // Server-side apply creates the object when it is absent.
        let apply = PatchParams::apply("speaker-test").force();
        let applied = api
            .patch(
                "q",
                &apply,
                &Patch::Apply(json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "q"}, "spec": {"holderIdentity": "n5"}
                })),
            )
            .await
            .expect("apply creates");
        assert_eq!(holder(&applied), "n5");
        let reapplied = api
            .patch("q", &apply, &Patch::Apply(json!({"spec": {"holderIdentity": "n6"}})))
            .await
            .expect("apply updates");
        assert_eq!(holder(&reapplied), "n6");
    });
}

#[test]
fn status_subresource_is_isolated() {
    let env = env();
    let api: Api<Service> = Api::namespaced(env.client.clone(), NS);
    env.run(async {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        }))
        .expect("service");
        let pp = PostParams::default();
        api.create(&pp, &svc).await.expect("create");
        let with_status: Service = serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.10"}]}},
        }))
        .expect("status");
        let s = api
            .replace_status("s", &pp, &with_status)
            .await
            .expect("replace_status");
        assert_eq!(
            s.spec.as_ref().and_then(|s| s.type_.as_deref()),
            Some("LoadBalancer"),
            "spec kept"
        );
        let ip = |s: &Service| -> Option<String> {
            s.status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?
                .first()?
                .ip
                .clone()
        };
        assert_eq!(ip(&s).as_deref(), Some("198.18.0.10"));

        // A main PUT changes the spec and keeps the status.
        let mut main = s.clone();
        main.spec
            .as_mut()
            .expect("spec")
            .ports
            .as_mut()
            .expect("ports")[0]
            .port = 81;
        main.status = None;
        let s = api.replace("s", &pp, &main).await.expect("replace");
        assert_eq!(ip(&s).as_deref(), Some("198.18.0.10"), "status kept");
        assert_eq!(
            s.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .map(|p| p[0].port),
            Some(81)
        );

        // A status patch changes only the status.
        let s = api
            .patch_status(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "spec": {"type": "ClusterIP"},
                    "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.11"}]}},
                })),
            )
            .await
            .expect("patch_status");
        assert_eq!(ip(&s).as_deref(), Some("198.18.0.11"));
        assert_eq!(
            s.spec.as_ref().and_then(|s| s.type_.as_deref()),
            Some("LoadBalancer")
        );
    });
}

#[test]
fn delete_with_stale_precondition_conflicts() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let old = api
            .create(&PostParams::default(), &lease("d", "n1", &[]))
            .await
            .expect("create");
        let cur = api
            .patch(
                "d",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": "n2"}})),
            )
            .await
            .expect("patch");
        let with = |rv: Option<&String>, uid: Option<&String>| DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: rv.cloned(),
                uid: uid.cloned(),
            }),
            ..DeleteParams::default()
        };
        let other_uid = "00000000-0000-4000-8000-000000000000".to_string();
        assert_eq!(
            api_code(
                api.delete("d", &with(old.metadata.resource_version.as_ref(), None))
                    .await
            ),
            409
        );
        assert_eq!(
            api_code(api.delete("d", &with(None, Some(&other_uid))).await),
            409
        );
        let deleted = api
            .delete(
                "d",
                &with(
                    cur.metadata.resource_version.as_ref(),
                    cur.metadata.uid.as_ref(),
                ),
            )
            .await
            .expect("delete");
        assert_eq!(
            deleted.left().map(|l| holder(&l).to_string()).as_deref(),
            Some("n2")
        );
        assert_eq!(api_code(api.get("d").await), 404);
        assert_eq!(
            api_code(api.delete("d", &DeleteParams::default()).await),
            404
        );
    });
}

#[test]
fn kube_watcher_sees_added_modified_deleted() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let pp = PostParams::default();
        api.create(&pp, &lease("before", "n0", &[]))
            .await
            .expect("create");
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        let initial = next_where(&mut events, "initial list", |e| match e.expect("watcher") {
            watcher::Event::InitApply(l) => Some(name(&l).to_string()),
            _ => None,
        })
        .await;
        assert_eq!(initial, "before");
        next_where(&mut events, "InitDone", |e| {
            matches!(e, Ok(watcher::Event::InitDone)).then_some(())
        })
        .await;

        let created = api
            .create(&pp, &lease("w", "n1", &[]))
            .await
            .expect("create");
        let applied = |e: Result<watcher::Event<Lease>, watcher::Error>| match e.expect("watcher") {
            watcher::Event::Apply(l) if name(&l) == "w" => Some(l),
            _ => None,
        };
        let seen = next_where(&mut events, "ADDED", applied).await;
        assert_eq!(
            seen.metadata.resource_version,
            created.metadata.resource_version
        );

        let mut changed = seen.clone();
        changed.spec = lease("w", "n2", &[]).spec;
        api.replace("w", &pp, &changed).await.expect("replace");
        assert_eq!(
            holder(&next_where(&mut events, "MODIFIED", applied).await),
            "n2"
        );

        api.delete("w", &DeleteParams::default())
            .await
            .expect("delete");
        let gone = next_where(&mut events, "DELETED", |e| match e.expect("watcher") {
            watcher::Event::Delete(l) => Some(name(&l).to_string()),
            _ => None,
        })
        .await;
        assert_eq!(gone, "w");
    });
}

#[test]
fn kube_watcher_streaming_list() {
    let env = env();
    let api = env.leases();
    env.server
        .create(
            &LEASES,
            Some(NS),
            serde_json::to_value(lease("s1", "n1", &[])).expect("json"),
        )
        .expect("direct create");
    env.run(async {
        let config = watcher::Config::default().streaming_lists();
        let mut events = watcher(api.clone(), config).boxed();
        let first = next_where(&mut events, "initial event", |e| {
            match e.expect("watcher") {
                watcher::Event::InitApply(l) => Some(name(&l).to_string()),
                _ => None,
            }
        })
        .await;
        assert_eq!(first, "s1");
        next_where(&mut events, "InitDone", |e| {
            matches!(e, Ok(watcher::Event::InitDone)).then_some(())
        })
        .await;
        api.create(&PostParams::default(), &lease("s2", "n2", &[]))
            .await
            .expect("create");
        let next = next_where(&mut events, "Apply", |e| match e.expect("watcher") {
            watcher::Event::Apply(l) => Some(name(&l).to_string()),
            _ => None,
        })
        .await;
        assert_eq!(next, "s2");
    });
}

#[test]
fn raw_watch_follows_label_selection_and_bookmarks() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let pp = PostParams::default();
        let wp = WatchParams::default().labels("app=x");
        let mut stream = api.watch(&wp, "0").await.expect("watch").boxed();
        let bookmark = next_where(&mut stream, "bookmark", |e| match e.expect("event") {
            WatchEvent::Bookmark(b) => Some(b),
            _ => None,
        })
        .await;
        assert!(!bookmark.metadata.resource_version.is_empty());

        let relabel = |app: &'static str| {
            let api = api.clone();
            async move {
                let patch = Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
                api.patch("w", &PatchParams::default(), &patch)
                    .await
                    .expect("relabel");
            }
        };
        api.create(&pp, &lease("w", "n1", &[("app", "x")]))
            .await
            .expect("create");
        api.create(&pp, &lease("other", "n1", &[("app", "y")]))
            .await
            .expect("create other");
        relabel("y").await; // leaves the selection
        relabel("x").await; // enters it again
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "n2"}})),
        )
        .await
        .expect("patch");
        api.delete("w", &DeleteParams::default())
            .await
            .expect("delete");
        let mut seen = Vec::new();
        while seen.len() < 5 {
            seen.push(next_where(&mut stream, "event", raw).await);
        }
        let want = [
            ("ADDED", "w", "n1"),
            ("DELETED", "w", "n1"),
            ("ADDED", "w", "n1"),
            ("MODIFIED", "w", "n2"),
            ("DELETED", "w", "n2"),
        ];
        let seen: Vec<_> = seen
            .iter()
            .map(|(t, n, h)| (*t, n.as_str(), h.as_str()))
            .collect();
        assert_eq!(seen, want);

        // Resuming from a version replays the history after it.
        let resumed = api
            .watch(&WatchParams::default().disable_bookmarks(), "1")
            .await
            .expect("watch");
        let mut resumed = resumed.boxed();
        let first = next_where(&mut resumed, "replayed event", raw).await;
        assert_eq!(first, ("ADDED", "other".to_string(), "n1".to_string()));
    });
}

#[test]
fn compact_forces_410_and_the_watcher_relists() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let pp = PostParams::default();
        api.create(&pp, &lease("a", "n1", &[]))
            .await
            .expect("create");
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        next_where(&mut events, "InitDone", |e| {
            matches!(e, Ok(watcher::Event::InitDone)).then_some(())
        })
        .await;

        // A change the watch does not deliver (held back), then the history
        // is dropped and the watch cut: resuming must fail with 410.
        env.server.stall_watches(STEP * 2);
        api.create(&pp, &lease("b", "n2", &[]))
            .await
            .expect("create b");
        env.server.compact();
        env.server.drop_watches();
        env.server.clear_faults();

        let code = next_where(&mut events, "410", |e| match e {
            Err(watcher::Error::WatchError(s)) => Some(s.code),
            Ok(watcher::Event::Apply(l)) => panic!("got {} without a re-list", name(&l)),
            _ => None,
        })
        .await;
        assert_eq!(code, 410);
        let mut relisted = Vec::new();
        next_where(&mut events, "InitDone after re-list", |e| {
            match e.expect("watcher") {
                watcher::Event::InitApply(l) => {
                    relisted.push(name(&l).to_string());
                    None
                }
                watcher::Event::InitDone => Some(()),
                _ => None,
            }
        })
        .await;
        assert_eq!(relisted, ["a", "b"]);

        api.create(&pp, &lease("c", "n3", &[]))
            .await
            .expect("create c");
        let later = next_where(&mut events, "Apply after re-list", |e| {
            match e.expect("watcher") {
                watcher::Event::Apply(l) => Some(name(&l).to_string()),
                _ => None,
            }
        })
        .await;
        assert_eq!(later, "c");
    });

    // A raw watch from before the compaction gets the ERROR event itself.
    let stream = env
        .run(env.leases().watch(&WatchParams::default(), "1"))
        .expect("watch");
    let mut stream = stream.boxed();
    let status = env.run(next_where(&mut stream, "ERROR", |e| {
        match e.expect("event") {
            WatchEvent::Error(s) => Some(s),
            _ => None,
        }
    }));
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status.message.starts_with("too old resource version: 1 "),
        "{}",
        status.message
    );
}

#[test]
fn history_limit_expires_old_versions() {
    let server = ApiServer::start_with(Options {
        history_limit: 2,
        ..Options::default()
    });
    let listener = server.listener();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let api: Api<Lease> = Api::namespaced(client(&rt, &server, &listener, "history"), NS);
    for n in ["a", "b", "c", "d"] {
        let obj = serde_json::to_value(lease(n, "n1", &[])).expect("json");
        server.create(&LEASES, Some(NS), obj).expect("create");
    }
    // Versions 3 and 4 are retained: resuming after 2 works, after 1 not.
    let first_event = |rv: &str| {
        rt.block_on(async {
            let stream = api.watch(&WatchParams::default(), rv).await.expect("watch");
            let mut stream = stream.boxed();
            tokio::time::timeout(STEP, stream.next())
                .await
                .expect("an event")
                .expect("not the end")
                .expect("an event, not an error")
        })
    };
    match first_event("2") {
        WatchEvent::Added(l) => assert_eq!(name(&l), "c"),
        other => panic!("expected c, got {other:?}"),
    }
    match first_event("1") {
        WatchEvent::Error(s) => assert_eq!(s.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[test]
fn stalled_watches_deliver_later_in_order() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let wp = WatchParams::default().disable_bookmarks();
        let rv = env.server.resource_version().to_string();
        let mut stream = api.watch(&wp, &rv).await.expect("watch").boxed();
        let stall = Duration::from_millis(400);
        let start = Instant::now();
        env.server.stall_watches(stall);
        for n in ["a", "b", "c"] {
            api.create(&PostParams::default(), &lease(n, "n1", &[]))
                .await
                .expect("writes still work");
        }
        let early = tokio::time::timeout(Duration::from_millis(150), stream.next()).await;
        assert!(early.is_err(), "an event came through the stall: {early:?}");
        let mut names = Vec::new();
        while names.len() < 3 {
            names.push(next_where(&mut stream, "held-back event", raw).await.1);
        }
        assert_eq!(names, ["a", "b", "c"]);
        assert!(
            start.elapsed() >= stall - Duration::from_millis(50),
            "{:?}",
            start.elapsed()
        );
    });
}

#[test]
fn watches_end_on_timeout_and_on_drop_watches() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let ends = |mut stream: futures::stream::BoxStream<
            'static,
            kube::Result<WatchEvent<Lease>>,
        >| async move {
            while let Some(event) = stream.next().await {
                event.expect("watch event");
            }
        };
        let start = Instant::now();
        let timed = api
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .expect("watch");
        tokio::time::timeout(STEP, ends(timed.boxed()))
            .await
            .expect("ends after timeoutSeconds");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "{took:?}"
        );

        let open = api
            .watch(&WatchParams::default(), "0")
            .await
            .expect("watch")
            .boxed();
        let ended = tokio::spawn(ends(open));
        tokio::time::sleep(Duration::from_millis(50)).await;
        env.server.drop_watches();
        tokio::time::timeout(Duration::from_secs(1), ended)
            .await
            .expect("ends on drop_watches")
            .expect("join");
    });
}

#[test]
fn closed_listener_cuts_off_its_clients_only() {
    let env = env();
    let second = env.server.listener();
    let other = client(&env.rt, &env.server, &second, "second");
    let cut: Api<Lease> = env.leases();
    let kept: Api<Lease> = Api::namespaced(other, NS);
    env.run(async {
        cut.create(&PostParams::default(), &lease("l", "n1", &[]))
            .await
            .expect("create");
        kept.get("l")
            .await
            .expect("get through the second listener");
        let mut watch = cut
            .watch(&WatchParams::default(), "0")
            .await
            .expect("watch")
            .boxed();
        next_where(&mut watch, "ADDED", raw).await;

        env.listener.close();
        let ended = tokio::time::timeout(STEP, async {
            loop {
                match watch.next().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "the watch through the closed listener did not end"
        );
        match cut.get("l").await {
            Err(kube::Error::Api(s)) => {
                panic!("expected a connection error, got the API answer {s:?}")
            }
            Err(_) => {}
            Ok(l) => panic!("got {l:?} through a closed listener"),
        }
        kept.get("l")
            .await
            .expect("the other listener keeps working");

        env.listener.reopen().expect("reopen");
        cut.get("l").await.expect("works again after reopen");
    });
}

#[test]
fn fail_next_and_delay() {
    let env = env();
    let api = env.leases();
    env.run(async {
        api.create(&PostParams::default(), &lease("f", "n1", &[]))
            .await
            .expect("create");
        env.server
            .fail_next(Match::path("/leases/f").method("GET"), 2, 500);
        assert_eq!(api_code(api.get("f").await), 500);
        // Other methods and paths are not affected.
        api.patch("f", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .expect("patch");
        assert_eq!(api_code(api.get("f").await), 500);
        api.get("f").await.expect("third get succeeds");

        // kube-rs retries 429, 503 and 504 by itself (backoff from 5 ms, up
        // to 15 times): the caller sees success, the server more requests.
        env.server.reset_stats();
        env.server.fail_next(Match::any(), 2, 503);
        api.list(&ListParams::default())
            .await
            .expect("retried by kube-rs");
        assert_eq!(env.server.stats().total.requests, 3);

        let delay = Duration::from_millis(200);
        env.server.delay(Match::path("leases").method("GET"), delay);
        let start = Instant::now();
        api.get("f").await.expect("delayed get");
        assert!(start.elapsed() >= delay, "{:?}", start.elapsed());
        env.server.clear_faults();
    });
}

#[test]
fn bad_requests_get_status_answers() {
    let env = env();
    env.run(async {
        let request = |method: &str, path: &str, body: &str| {
            hyper::http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(body.as_bytes().to_vec())
                .expect("request")
        };
        let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
        let cases = [
            ("POST", leases.clone(), "{not json", 400),
            ("POST", leases.clone(), r#"{"metadata": 1}"#, 400),
            ("GET", "/apis/example.com/v1/widgets".to_string(), "", 404),
            ("GET", "/nothing/here".to_string(), "", 404),
            ("GET", format!("{leases}/x/scale"), "", 404),
            ("GET", "/api/v1/namespaces/x/nodes".to_string(), "", 404),
            ("PUT", leases.clone(), "{}", 405),
            ("POST", format!("{leases}/x"), "{}", 405),
            ("GET", format!("{leases}?labelSelector=a%20in%20b"), "", 400),
            (
                "GET",
                format!("{leases}?watch=true&resourceVersion=abc"),
                "",
                400,
            ),
        ];
        for (method, path, body, code) in cases {
            let result = env.client.request_text(request(method, &path, body)).await;
            assert_eq!(api_code(result), code, "{method} {path}");
        }
        let patch = |content_type: &str, name: &str, body: &str| {
            hyper::http::Request::patch(format!("{leases}/{name}"))
                .header("content-type", content_type)
                .body(body.as_bytes().to_vec())
                .expect("request")
        };
        env.server
            .create(&LEASES, Some(NS), json!({"metadata": {"name": "x"}}))
            .expect("direct create");
        let patches = [
            ("text/plain", "x", "{}", 415),
            ("application/merge-patch+json", "x", "[]", 400),
            (
                "application/merge-patch+json",
                "x",
                r#"{"metadata": 5}"#,
                400,
            ),
            (
                "application/json-patch+json",
                "x",
                r#"[{"op": "remove", "path": "/metadata"}]"#,
                400,
            ),
            (
                "application/json-patch+json",
                "x",
                r#"[{"op": "jump", "path": ""}]"#,
                400,
            ),
            (
                "application/apply-patch+yaml",
                "new",
                r#"{"metadata": 5}"#,
                400,
            ),
            ("application/apply-patch+yaml", "new", "metadata: {}", 400),
            ("application/merge-patch+json", "missing", "{}", 404),
        ];
        for (content_type, name, body, code) in patches {
            let result = env
                .client
                .request_text(patch(content_type, name, body))
                .await;
            assert_eq!(api_code(result), code, "{content_type} {body}");
        }
    });
}

#[test]
fn stats_count_requests_and_writes() {
    let env = env();
    let api = env.leases();
    env.run(async {
        let pp = PostParams::default();
        let l = api
            .create(&pp, &lease("s", "n1", &[]))
            .await
            .expect("create");
        api.get("s").await.expect("get");
        api.replace("s", &pp, &l).await.expect("replace");
        api.patch("s", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .expect("patch");
        api.list(&ListParams::default()).await.expect("list");
        api.delete("s", &DeleteParams::default())
            .await
            .expect("delete");
        Api::<Service>::namespaced(env.client.clone(), NS)
            .get_opt("x")
            .await
            .expect("get svc");
    });
    let stats = env.server.stats();
    let leases = stats.resource("leases.coordination.k8s.io");
    assert_eq!((leases.requests, leases.writes), (6, 4), "{stats:?}");
    assert_eq!(
        (
            stats.resource("services").requests,
            stats.resource("services").writes
        ),
        (1, 0)
    );
    assert_eq!((stats.total.requests, stats.total.writes), (7, 4));
    env.server.reset_stats();
    assert_eq!(env.server.stats().total.requests, 0);
}

#[test]
fn generic_store_serves_metallb_ipaddresspools() {
    let env = env();
    let gvk = GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "ipaddresspools");
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), "metallb-system", &ar);
    // An object put in directly is seen through the API, and vice versa.
    env.server
        .create(
            &IP_ADDRESS_POOLS,
            Some("metallb-system"),
            json!({"metadata": {"name": "direct"}, "spec": {"addresses": ["198.18.1.0/24"]}}),
        )
        .expect("direct create");
    env.run(async {
        let pool =
            DynamicObject::new("pool", &ar).data(json!({"spec": {"addresses": ["198.18.0.0/24"]}}));
        let made = api
            .create(&PostParams::default(), &pool)
            .await
            .expect("create");
        assert_eq!(
            made.types.as_ref().map(|t| t.kind.as_str()),
            Some("IPAddressPool")
        );
        assert_eq!(made.data["spec"]["addresses"][0], "198.18.0.0/24");

        let list = api.list(&ListParams::default()).await.expect("list");
        let mut names: Vec<_> = list.items.iter().map(name).collect();
        names.sort_unstable();
        assert_eq!(names, ["direct", "pool"]);

        let mut status = made.clone();
        status.data["status"] = json!({"assignedIPv4": 1});
        let with_status = api
            .replace_status("pool", &PostParams::default(), &status)
            .await
            .expect("status");
        let mut main = with_status.clone();
        main.data["spec"]["autoAssign"] = json!(false);
        main.data["status"] = json!({"assignedIPv4": 99});
        let replaced = api
            .replace("pool", &PostParams::default(), &main)
            .await
            .expect("replace");
        assert_eq!(
            replaced.data["status"],
            json!({"assignedIPv4": 1}),
            "status kept"
        );
        assert_eq!(replaced.data["spec"]["autoAssign"], json!(false));
    });
    let stored = env
        .server
        .get(&IP_ADDRESS_POOLS, Some("metallb-system"), "pool")
        .expect("direct get");
    assert_eq!(stored["metadata"]["generation"], 2);
    env.server
        .delete(&IP_ADDRESS_POOLS, Some("metallb-system"), "pool")
        .expect("direct delete");
    assert_eq!(
        env.server
            .list(&IP_ADDRESS_POOLS, None)
            .expect("list")
            .len(),
        1
    );
}

#[test]
fn cluster_gives_each_node_its_own_kubeconfig() {
    let cluster = Cluster::from_env(2).expect("cluster");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let clients: Vec<Client> = (0..2)
        .map(|node| {
            let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig(node)).expect("kubeconfig");
            let config = rt
                .block_on(Config::from_custom_kubeconfig(
                    kubeconfig,
                    &KubeConfigOptions::default(),
                ))
                .expect("config");
            let _guard = rt.enter();
            Client::try_from(config).expect("client")
        })
        .collect();
    cluster
        .create(
            &LEASES,
            serde_json::to_value(lease("c", "n1", &[])).expect("json"),
        )
        .expect("create");
    let get = |node: usize| {
        let api: Api<Lease> = Api::namespaced(clients[node].clone(), cluster.namespace());
        rt.block_on(async { tokio::time::timeout(STEP, api.get("c")).await })
            .expect("timed out")
    };
    assert_eq!(holder(&get(0).expect("node 0")), "n1");
    assert_eq!(holder(&get(1).expect("node 1")), "n1");

    // Cutting one node off (needs the stand-in).
    let _server = cluster.require_stand_in();
    let node1 = cluster.node_listener(1).expect("listener of node 1");
    node1.close();
    assert!(get(1).is_err(), "node 1 is cut off");
    get(0).expect("node 0 still reaches the API");
    node1.reopen().expect("reopen");
    get(1).expect("node 1 is back");
    cluster.delete(&LEASES, "c").expect("delete");
    assert!(cluster.get(&LEASES, "c").expect("get").is_none());
}
