//! RBAC as the code needs it (`speaker::k8s::access`), against what the
//! processes did (the stand-in's record of requests) and what `deploy/`
//! grants.

use std::collections::BTreeSet;

use speaker::k8s::access::{Access, Scope};

use crate::apiserver::Access as Seen;

/// One grant, flattened: group, resource, verb, namespace (`None`:
/// cluster-wide).
pub type Grant = (String, String, String, Option<String>);

/// `list` flattened, its scopes named by the namespaces given.
pub fn grants(list: &[Access], own: &str, config: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for a in list {
        let ns = match a.scope {
            Scope::Cluster => None,
            Scope::Own => Some(own.to_string()),
            Scope::Config => Some(config.to_string()),
        };
        for verb in a.verbs {
            out.insert((
                a.group.to_string(),
                a.resource.to_string(),
                verb.to_string(),
                ns.clone(),
            ));
        }
    }
    out
}

/// The requests in `seen` that `list` does not allow, described.
pub fn ungranted(seen: &BTreeSet<Seen>, list: &[Access], own: &str, config: &str) -> Vec<String> {
    let allowed = grants(list, own, config);
    seen.iter()
        .filter(|s| {
            let key =
                |ns: Option<String>| (s.group.clone(), s.resource.clone(), s.verb.to_string(), ns);
            // A cluster-wide grant covers every namespace.
            !allowed.contains(&key(None)) && !allowed.contains(&key(s.namespace.clone()))
        })
        .map(|s| format!("{s:?}"))
        .collect()
}
