//! The patch formats of PATCH requests: JSON merge patch (RFC 7386) and JSON
//! patch (RFC 6902). Strategic merge patch and server-side apply are served
//! as merge patches (see `PatchKind`).

use serde_json::Value;

use super::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    /// Treated as a merge patch: the lists the stand-in's users patch are
    /// replaced whole, which is what a merge patch does.
    StrategicMerge,
    Json,
    /// Server-side apply, as kube-rs `Patch::Apply` sends it (a JSON body).
    /// Treated as a merge patch that creates the object when it is absent;
    /// fields a manager stops applying are not removed (no managedFields).
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies `patch` of `kind` to `target`.
pub fn apply(kind: PatchKind, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge | PatchKind::StrategicMerge | PatchKind::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            merge(target, patch);
            Ok(())
        }
        PatchKind::Json => json_patch(target, patch),
    }
}

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in patch {
            if value.is_null() {
                t.remove(key);
            } else {
                merge(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// RFC 6902. The document is only changed when every operation succeeds.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be an array of operations"))?;
    let mut doc = target.clone();
    for op in ops {
        let field = |name: &str| {
            op.get(name).and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request(format!("JSON patch operation lacks \"{name}\": {op}"))
            })
        };
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                ApiError::bad_request(format!("JSON patch operation lacks \"value\": {op}"))
            })
        };
        let path = parse_pointer(field("path")?)?;
        match field("op")? {
            "add" => add(&mut doc, &path, value()?)?,
            "remove" => {
                remove(&mut doc, &path)?;
            }
            "replace" => {
                remove(&mut doc, &path)?;
                add(&mut doc, &path, value()?)?;
            }
            "move" => {
                let from = parse_pointer(field("from")?)?;
                let moved = remove(&mut doc, &from)?;
                add(&mut doc, &path, moved)?;
            }
            "copy" => {
                let from = parse_pointer(field("from")?)?;
                let copied = get(&doc, &from)?.clone();
                add(&mut doc, &path, copied)?;
            }
            "test" => {
                // Real API servers have answered a failed test with 500 or
                // 422 over the years; 422 Invalid is the meaningful one.
                if *get(&doc, &path)? != value()? {
                    return Err(ApiError::invalid(format!(
                        "the test operation failed: {op}"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown JSON patch op \"{other}\""
                )));
            }
        }
    }
    *target = doc;
    Ok(())
}

/// RFC 6901: `/a/b~1c` -> ["a", "b/c"].
fn parse_pointer(p: &str) -> Result<Vec<String>, ApiError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer \"{p}\"")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn missing(path: &[String]) -> ApiError {
    ApiError::invalid(format!(
        "JSON patch path /{} does not exist",
        path.join("/")
    ))
}

fn index(token: &str, len: usize, path: &[String]) -> Result<usize, ApiError> {
    token
        .parse::<usize>()
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(|| missing(path))
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Result<&'a Value, ApiError> {
    let mut cur = doc;
    for token in path {
        cur = match cur {
            Value::Object(m) => m.get(token),
            Value::Array(a) => a.get(index(token, a.len(), path)?),
            _ => None,
        }
        .ok_or_else(|| missing(path))?;
    }
    Ok(cur)
}

/// The container that holds the last token of `path`, and that token.
fn parent<'a, 'p>(
    doc: &'a mut Value,
    path: &'p [String],
) -> Result<(&'a mut Value, &'p str), ApiError> {
    let (last, init) = path.split_last().ok_or_else(|| missing(path))?;
    let mut cur = doc;
    for token in init {
        cur = match cur {
            Value::Object(m) => m.get_mut(token),
            Value::Array(a) => {
                let i = index(token, a.len(), path)?;
                a.get_mut(i)
            }
            _ => None,
        }
        .ok_or_else(|| missing(path))?;
    }
    Ok((cur, last))
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(m) => {
            m.insert(last.to_string(), value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                index(last, a.len() + 1, path)?
            };
            a.insert(i, value);
        }
        _ => return Err(missing(path)),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, ApiError> {
    if path.is_empty() {
        return Ok(std::mem::take(doc));
    }
    let (container, last) = parent(doc, path)?;
    match container {
        Value::Object(m) => m.remove(last).ok_or_else(|| missing(path)),
        Value::Array(a) => {
            let i = index(last, a.len(), path)?;
            Ok(a.remove(i))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            doc,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
    }

    #[test]
    fn json_patch_rfc6902() {
        let mut doc = json!({"a": {"b": [1, 2]}, "c~/d": 1});
        let patch = json!([
            {"op": "add", "path": "/a/b/1", "value": 9},
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/c~0~1d", "value": 2},
            {"op": "copy", "from": "/a/b", "path": "/copy"},
            {"op": "move", "from": "/copy/0", "path": "/moved"},
            {"op": "remove", "path": "/a/b/0"},
            {"op": "test", "path": "/moved", "value": 1},
        ]);
        json_patch(&mut doc, &patch).expect("patch applies");
        assert_eq!(
            doc,
            json!({"a": {"b": [9, 2, 3]}, "c~/d": 2, "copy": [9, 2, 3], "moved": 1})
        );

        // A failed test leaves the document untouched.
        let before = doc.clone();
        let failing = json!([{"op": "remove", "path": "/moved"}, {"op": "test", "path": "/c~0~1d", "value": 5}]);
        assert_eq!(json_patch(&mut doc, &failing).map_err(|e| e.code), Err(422));
        assert_eq!(doc, before);
        for bad in [
            json!({}),
            json!([{"op": "remove", "path": "/nope"}]),
            json!([{"op": "add"}]),
        ] {
            assert!(json_patch(&mut doc, &bad).is_err(), "{bad}");
        }
    }
}
