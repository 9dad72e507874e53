//! The object store: every resource's objects as JSON, one resourceVersion
//! counter, the retained history of changes, and the open watches that get
//! each new change.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    patch::{self, PatchKind},
    resources::{Gvr, ResourceKind},
    selector::Filter,
    status::ApiError,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as recorded in the history and sent to the watches.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub gvr: Gvr,
    pub event: EventType,
    /// The object after the change (for Deleted: as it was, with the new rv).
    pub object: Value,
    /// For Modified: the object before, so a label-selected watch can tell
    /// an object entering or leaving its selection.
    pub previous: Option<Value>,
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// No resourceVersion or "0": every current object as ADDED, then live.
    Now,
    /// After this resourceVersion: the retained history, then live.
    After(u64),
}

/// What a new watch gets: the initial objects, the history to replay, and a
/// channel of live changes, with no gap or overlap between them.
pub struct WatchStart {
    pub initial: Vec<Value>,
    pub replay: Vec<Arc<Change>>,
    pub live: mpsc::UnboundedReceiver<Arc<Change>>,
    /// The store's resourceVersion when the watch was registered.
    pub rv: u64,
}

/// `(group, resource, namespace or "", name)`
type Key = (&'static str, &'static str, String, String);

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches may resume after any version at or above this; older ones
    /// get 410 Expired.
    oldest_resumable: u64,
    watchers: Vec<(Gvr, mpsc::UnboundedSender<Arc<Change>>)>,
    /// Makes uids differ between stand-ins.
    uid_seed: u64,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest_resumable: 0,
            watchers: Vec::new(),
            uid_seed: nanos ^ u64::from(std::process::id()) << 32,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Drops all history: a watch resuming from any earlier version gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_resumable = self.rv;
    }

    pub fn get(&self, res: &ResourceKind, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let key = key(res, ns, name)?;
        self.objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.gvr, name))
    }

    /// The matching objects (in one namespace, or all) and the current rv.
    pub fn list(&self, res: &ResourceKind, ns: Option<&str>, filter: &Filter) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|((g, r, n, _), obj)| {
                *g == res.gvr.group
                    && *r == res.gvr.resource
                    && ns.is_none_or(|ns| !res.namespaced || n == ns)
                    && filter.matches(obj)
            })
            .map(|(_, obj)| obj.clone())
            .collect();
        (items, self.rv)
    }

    pub fn create(
        &mut self,
        res: &ResourceKind,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let meta = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::bad_request("metadata is required"))?;
        check_namespace(res, ns, meta.get("namespace"))?;
        // Real API servers refuse this too (their etcd layer, as a 500).
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            return Err(ApiError::new(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid("metadata.name or metadata.generateName is required")
                })?
                .to_string();
            name = self.generate_name(res, ns, &prefix)?;
        }
        let key = key(res, ns, &name)?;
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&res.gvr, &name));
        }
        let rv = self.rv + 1;
        meta.insert("name".into(), json!(name));
        if let Some(ns) = ns.filter(|_| res.namespaced) {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("uid".into(), json!(self.uid(rv)));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        set_type(res, &mut obj);
        self.rv = rv;
        self.objects.insert(key, obj.clone());
        self.record(res, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// PUT: `obj` replaces the stored object (or only its status, for
    /// `Part::Status`). A non-empty `metadata.resourceVersion` must match.
    pub fn replace(
        &mut self,
        res: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let old = self.get(res, ns, name)?;
        if !obj["metadata"].is_object() {
            return Err(ApiError::bad_request("metadata is required"));
        }
        check_namespace(res, ns, obj["metadata"].get("namespace"))?;
        match obj["metadata"]["name"].as_str() {
            None | Some("") => {}
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        check_rv(res, name, &old, &obj)?;
        self.write(res, ns, name, old, obj, part)
    }

    /// PATCH. With `PatchKind::Apply` a missing object is created (the bool
    /// says whether it was). A resourceVersion the patch sets is a precondition.
    pub fn patch(
        &mut self,
        res: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        part: Part,
    ) -> Result<(Value, bool), ApiError> {
        let old = match self.get(res, ns, name) {
            Ok(old) => old,
            Err(e) if e.code == 404 && kind == PatchKind::Apply && part == Part::Main => {
                let mut obj = json!({"metadata": {"name": name}});
                patch::apply(kind, &mut obj, body)?;
                let meta = obj
                    .get_mut("metadata")
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
                meta.insert("name".into(), json!(name));
                meta.remove("resourceVersion");
                return Ok((self.create(res, ns, obj)?, true));
            }
            Err(e) => return Err(e),
        };
        let mut new = old.clone();
        patch::apply(kind, &mut new, body)?;
        check_rv(res, name, &old, &new)?;
        Ok((self.write(res, ns, name, old, new, part)?, false))
    }

    /// DELETE, with optional preconditions; returns the deleted object.
    pub fn delete(
        &mut self,
        res: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        precondition_rv: Option<&str>,
        precondition_uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = key(res, ns, name)?;
        let old = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(&res.gvr, name))?;
        for (field, label, want) in [
            ("resourceVersion", "ResourceVersion", precondition_rv),
            ("uid", "UID", precondition_uid),
        ] {
            let have = old["metadata"][field].as_str().unwrap_or("");
            if let Some(want) = want.filter(|w| *w != have) {
                return Err(ApiError::conflict(
                    &res.gvr,
                    name,
                    &format!(
                        "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                    ),
                ));
            }
        }
        let mut obj = self.objects.remove(&key).unwrap_or_default();
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(res, EventType::Deleted, obj.clone(), None);
        Ok(obj)
    }

    /// Registers a watch on `gvr` (the caller filters by namespace and
    /// selectors), or fails with 410 when `from` is older than the history.
    pub fn watch(
        &mut self,
        res: &ResourceKind,
        ns: Option<&str>,
        from: WatchFrom,
    ) -> Result<WatchStart, ApiError> {
        let (initial, replay) = match from {
            WatchFrom::Now => (self.list(res, ns, &Filter::default()).0, Vec::new()),
            WatchFrom::After(v) if v < self.oldest_resumable => {
                return Err(ApiError::expired(v, self.oldest_resumable + 1));
            }
            WatchFrom::After(v) => {
                let replay = self
                    .history
                    .iter()
                    .filter(|c| c.rv > v && c.gvr == res.gvr)
                    .cloned()
                    .collect();
                (Vec::new(), replay)
            }
        };
        let (tx, live) = mpsc::unbounded_channel();
        self.watchers.push((res.gvr, tx));
        Ok(WatchStart {
            initial,
            replay,
            live,
            rv: self.rv,
        })
    }

    /// The common end of PUT and PATCH: keeps what the request may not
    /// change, bumps generation and resourceVersion, records the change.
    /// A write that changes nothing is a no-op, as in Kubernetes.
    fn write(
        &mut self,
        res: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        old: Value,
        requested: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let mut new = match part {
            Part::Main => {
                let mut new = requested;
                if res.status {
                    set_or_remove(&mut new, "status", old.get("status").cloned());
                }
                new
            }
            Part::Status => {
                let mut new = old.clone();
                set_or_remove(&mut new, "status", requested.get("status").cloned());
                new
            }
        };
        if !new.is_object() || !new["metadata"].is_object() {
            return Err(ApiError::bad_request("the object must have metadata"));
        }
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
        ] {
            set_or_remove(
                &mut new["metadata"],
                field,
                old["metadata"].get(field).cloned(),
            );
        }
        set_type(res, &mut new);
        if new.get("spec") != old.get("spec") {
            let generation = old["metadata"]["generation"].as_u64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        if new == old {
            return Ok(old);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key(res, ns, name)?, new.clone());
        self.record(res, EventType::Modified, new.clone(), Some(old));
        Ok(new)
    }

    fn record(
        &mut self,
        res: &ResourceKind,
        event: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            gvr: res.gvr,
            event,
            object,
            previous,
        });
        self.watchers
            .retain(|(gvr, tx)| *gvr != res.gvr || tx.send(change.clone()).is_ok());
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_resumable = dropped.rv;
            }
        }
    }

    fn generate_name(
        &self,
        res: &ResourceKind,
        ns: Option<&str>,
        prefix: &str,
    ) -> Result<String, ApiError> {
        // Kubernetes appends 5 characters from this alphabet.
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut seed = self.uid_seed ^ self.rv.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        loop {
            let suffix: String = (0..5)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ALPHABET[(seed >> 33) as usize % ALPHABET.len()] as char
                })
                .collect();
            let name = format!("{prefix}{suffix}");
            if !self.objects.contains_key(&key(res, ns, &name)?) {
                return Ok(name);
            }
        }
    }

    fn uid(&self, rv: u64) -> String {
        let s = self.uid_seed;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (s >> 32) as u32,
            (s >> 16) as u16,
            s & 0xfff,
            (rv >> 48) & 0xfff,
            rv & 0xffff_ffff_ffff
        )
    }
}

fn key(res: &ResourceKind, ns: Option<&str>, name: &str) -> Result<Key, ApiError> {
    let ns = match (res.namespaced, ns) {
        (true, Some(ns)) if !ns.is_empty() => ns.to_string(),
        (true, _) => {
            return Err(ApiError::bad_request(format!(
                "{} is namespaced: a namespace is required",
                res.gvr.qualified()
            )));
        }
        (false, _) => String::new(),
    };
    Ok((res.gvr.group, res.gvr.resource, ns, name.to_string()))
}

/// A body's `metadata.namespace`, when set, must agree with the request's.
fn check_namespace(
    res: &ResourceKind,
    ns: Option<&str>,
    in_body: Option<&Value>,
) -> Result<(), ApiError> {
    let in_body = in_body.and_then(Value::as_str).unwrap_or("");
    if res.namespaced && !in_body.is_empty() && Some(in_body) != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Optimistic concurrency: a non-empty resourceVersion in `new` must be the
/// stored one.
fn check_rv(res: &ResourceKind, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    match new["metadata"]["resourceVersion"].as_str() {
        None | Some("") => Ok(()),
        Some(rv) if Some(rv) == old["metadata"]["resourceVersion"].as_str() => Ok(()),
        Some(_) => Err(ApiError::modified(&res.gvr, name)),
    }
}

fn set_type(res: &ResourceKind, obj: &mut Value) {
    obj["kind"] = json!(res.kind);
    obj["apiVersion"] = json!(res.gvr.api_version());
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<Value>) {
    match (obj.as_object_mut(), value) {
        (Some(m), Some(v)) => {
            m.insert(field.to_string(), v);
        }
        (Some(m), None) => {
            m.remove(field);
        }
        (None, _) => {}
    }
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
