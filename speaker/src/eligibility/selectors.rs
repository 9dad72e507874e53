//! Kubernetes label selectors (`matchLabels`, `matchExpressions`), checked
//! once and then matched against label maps.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A checked label selector: all requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Checks `sel` as the API server does for built-in objects (it does
    /// not for custom resources): operators In, NotIn, Exists and
    /// DoesNotExist; values required for In/NotIn, forbidden otherwise.
    pub(crate) fn parse(sel: &LabelSelector) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for (key, value) in sel.match_labels.iter().flatten() {
            let values = BTreeSet::from([value.clone()]);
            reqs.push(Requirement {
                key: key.clone(),
                op: Op::In(values),
            });
        }
        for expr in sel.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let op = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "operator {} on key {:?} needs values",
                        expr.operator, expr.key
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "operator {} on key {:?} takes no values",
                        expr.operator, expr.key
                    ));
                }
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => return Err(format!("unknown operator {other:?} on key {:?}", expr.key)),
            };
            reqs.push(Requirement {
                key: expr.key.clone(),
                op,
            });
        }
        Ok(Self(reqs))
    }

    /// An empty selector matches everything.
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|req| {
            let value = labels.get(&req.key);
            match &req.op {
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// What a list of selectors picks: the union of its selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// The list was absent or empty.
    All,
    /// The valid selectors of the list; a bad one was dropped, so it
    /// selects nothing (fail closed).
    AnyOf(Vec<Selector>),
}

impl Selection {
    /// Parses a list of selectors; the errors name the bad ones by index.
    pub(crate) fn parse(list: &[LabelSelector], field: &str) -> (Self, Vec<String>) {
        if list.is_empty() {
            return (Self::All, Vec::new());
        }
        let mut good = Vec::new();
        let mut errors = Vec::new();
        for (i, sel) in list.iter().enumerate() {
            match Selector::parse(sel) {
                Ok(s) => good.push(s),
                Err(e) => errors.push(format!("{field}[{i}] selects nothing: {e}")),
            }
        }
        (Self::AnyOf(good), errors)
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::All => true,
            Self::AnyOf(sels) => sels.iter().any(|s| s.matches(labels)),
        }
    }
}
