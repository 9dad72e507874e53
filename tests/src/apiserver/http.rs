//! The HTTP side: the Kubernetes URL layout, query parameters and bodies,
//! mapped onto the store; faults and counters are applied here, per request.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
};
use serde_json::{Value, json};

use super::{
    Shared, lock,
    patch::PatchKind,
    resources::{ResourceKind, lookup},
    selector::Filter,
    stats::Access,
    status::ApiError,
    store::{Part, WatchFrom},
    watch::{self, WatchParams},
};

pub type Body = BoxBody<Bytes, Infallible>;

/// Request bodies larger than this are refused.
const MAX_BODY: usize = 8 << 20;

/// Serves one request. Never fails: every error is a `Status` answer.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let target = req.uri().path_and_query().map_or_else(
        || req.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let route =
        Route::parse(req.uri().path()).and_then(|r| match shared.unserved.contains(&r.res.gvr) {
            true => Err(ApiError::no_route()),
            false => Ok(r),
        });
    let write = matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
    let resource = route.as_ref().ok().map(|r| r.res.gvr.qualified());
    lock(&shared.stats).count(resource, write);
    if let Ok(r) = &route {
        let watch = req.uri().query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
        });
        let verb = match (method.as_str(), r.name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => "other",
        };
        let resource = match r.status {
            true => format!("{}/status", r.res.gvr.resource),
            false => r.res.gvr.resource.to_string(),
        };
        lock(&shared.stats).accessed(Access {
            group: r.res.gvr.group.to_string(),
            resource,
            verb,
            namespace: r.ns.clone(),
        });
    }

    let delay = lock(&shared.faults).delay(&method, &target);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let failure = lock(&shared.faults).take_failure(&method, &target);
    if let Some(code) = failure {
        return error(&ApiError::injected(code));
    }
    match serve(shared, req, route).await {
        Ok(resp) => resp,
        Err(e) => error(&e),
    }
}

/// Where a request goes: `/api/v1[/namespaces/NS]/RESOURCE[/NAME[/status]]`
/// or the same under `/apis/GROUP/VERSION`.
struct Route {
    res: &'static ResourceKind,
    ns: Option<String>,
    name: Option<String>,
    status: bool,
}

impl Route {
    fn parse(path: &str) -> Result<Self, ApiError> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::no_route()),
        };
        // `namespaces/NS/RESOURCE...`, except `namespaces/NAME/status`.
        let (ns, rest) = match rest {
            ["namespaces", ns, resource, tail @ ..] if *resource != "status" => {
                (Some(ns.to_string()), (*resource, tail))
            }
            [resource, tail @ ..] => (None, (*resource, tail)),
            [] => return Err(ApiError::no_route()),
        };
        let (resource, (name, sub)) = match rest {
            (r, []) => (r, (None, None)),
            (r, [name]) => (r, (Some(name.to_string()), None)),
            (r, [name, sub]) => (r, (Some(name.to_string()), Some(*sub))),
            _ => return Err(ApiError::no_route()),
        };
        let res = lookup(group, version, resource).ok_or_else(ApiError::no_route)?;
        let misplaced = if res.namespaced {
            ns.is_none() && name.is_some()
        } else {
            ns.is_some()
        };
        let status = match sub {
            None => false,
            Some("status") if res.status => true,
            Some(_) => return Err(ApiError::no_route()),
        };
        if misplaced {
            return Err(ApiError::no_route());
        }
        Ok(Self {
            res,
            ns,
            name,
            status,
        })
    }

    fn part(&self) -> Part {
        if self.status {
            Part::Status
        } else {
            Part::Main
        }
    }

    /// Collections of a namespaced resource take writes only in a namespace.
    fn writable_collection(&self) -> bool {
        self.name.is_none() && (self.ns.is_some() || !self.res.namespaced)
    }
}

async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    route: Result<Route, ApiError>,
) -> Result<Response<Body>, ApiError> {
    let route = route?;
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if query.contains_key("dryRun") {
        return Err(ApiError::bad_request(
            "dryRun is not supported by the stand-in",
        ));
    }
    let flag = |k: &str| matches!(query.get(k).map(String::as_str), Some("true" | "1"));
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
        .to_bytes();
    let (res, ns) = (route.res, route.ns.as_deref());
    let filter = || {
        Filter::parse(
            query.get("labelSelector").map(String::as_str),
            query.get("fieldSelector").map(String::as_str),
        )
    };

    match (&parts.method, route.name.as_deref()) {
        (&Method::GET, None) if flag("watch") => {
            let initial_events_end = flag("sendInitialEvents");
            let from = match query.get("resourceVersion").map(String::as_str) {
                _ if initial_events_end => WatchFrom::Now,
                None | Some("" | "0") => WatchFrom::Now,
                Some(v) => WatchFrom::After(v.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {v}"))
                })?),
            };
            let timeout = match query.get("timeoutSeconds") {
                Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid timeoutSeconds: {t}"))
                })?)),
                None => None,
            };
            let params = WatchParams {
                ns: route.ns.clone(),
                filter: filter()?,
                from,
                initial_events_end,
                bookmarks: flag("allowWatchBookmarks"),
                timeout,
            };
            let body = watch::start(shared, res, params);
            Ok(respond(StatusCode::OK, body.boxed()))
        }
        (&Method::GET, None) => {
            let (items, rv) = lock(&shared.store).list(res, ns, &filter()?);
            Ok(json_response(StatusCode::OK, &list(res, items, rv)))
        }
        (&Method::GET, Some(name)) => {
            let obj = lock(&shared.store).get(res, ns, name)?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (&Method::POST, None) if route.writable_collection() => {
            let obj = lock(&shared.store).create(res, ns, parse_json(&body)?)?;
            Ok(json_response(StatusCode::CREATED, &obj))
        }
        (&Method::PUT, Some(name)) => {
            let obj = parse_json(&body)?;
            let obj = lock(&shared.store).replace(res, ns, name, obj, route.part())?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (&Method::PATCH, Some(name)) => {
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchKind::from_content_type(content_type).ok_or_else(|| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {content_type}"),
                )
            })?;
            // Server-side apply bodies may be YAML in general; kube-rs sends JSON.
            let patch = parse_json(&body)?;
            let (obj, created) =
                lock(&shared.store).patch(res, ns, name, kind, &patch, route.part())?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &obj))
        }
        (&Method::DELETE, Some(name)) if !route.status => {
            let options = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                parse_json(&body)?
            };
            let pre = &options["preconditions"];
            let obj = lock(&shared.store).delete(
                res,
                ns,
                name,
                pre["resourceVersion"].as_str(),
                pre["uid"].as_str(),
            )?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        (&Method::DELETE, None) if route.writable_collection() => {
            let filter = filter()?;
            let mut store = lock(&shared.store);
            let (items, _) = store.list(res, ns, &filter);
            let mut deleted = Vec::new();
            for item in items {
                let item_ns = item["metadata"]["namespace"].as_str();
                let name = item["metadata"]["name"].as_str().unwrap_or("");
                deleted.push(store.delete(res, item_ns, name, None, None)?);
            }
            let rv = store.resource_version();
            Ok(json_response(StatusCode::OK, &list(res, deleted, rv)))
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn list(res: &ResourceKind, items: Vec<Value>, rv: u64) -> Value {
    json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.gvr.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })
}

fn respond(code: StatusCode, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    respond(code, Full::new(Bytes::from(value.to_string())).boxed())
}

pub fn error(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.to_status())
}
