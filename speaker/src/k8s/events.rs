//! Kubernetes Events, as MetalLB posts them: which node announces a
//! Service (`nodeAssigned`), which addresses it was given (`IPAllocated`,
//! `AllocationFailed`), and configuration problems (Warnings on the object
//! at fault, where `kubectl describe` shows them).
//!
//! Events are queued to one posting task, each post bounded by a timeout:
//! the caller's loop never waits on the API for one (a thousand takeovers
//! would otherwise stall the renewals every answer depends on), and a full
//! queue drops Events rather than memory without bound (they are
//! information only).

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tokio::{sync::mpsc, time::timeout};
use tracing::{debug, warn};

use crate::eligibility::{Issue, ObjectRef};

/// An Event not posted by then is given up (it is information only).
const POST_TIMEOUT: Duration = Duration::from_secs(1);
/// Events waiting to be posted at most.
const QUEUE: usize = 4096;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    queue: mpsc::Sender<(Event, ObjectReference)>,
}

/// Configuration problems already reported, so each is posted once.
#[derive(Default)]
pub struct Reported(BTreeSet<Issue>);

impl Events {
    /// Events reported by `controller` (`speaker`, `speaker-controller`)
    /// from `instance` (the node, or the controller process).
    /// Starts the posting task on the current runtime.
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: controller.into(),
                instance: Some(instance.to_string()),
            },
        );
        let (queue, mut rx) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let poster = recorder.clone();
        tokio::spawn(async move {
            while let Some((ev, reference)) = rx.recv().await {
                match timeout(POST_TIMEOUT, poster.publish(&ev, &reference)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(error = %e, "cannot post event"),
                    Err(_) => debug!("posting an event timed out"),
                }
            }
        });
        Self { recorder, queue }
    }

    /// `IPAllocated` on a Service given `ips` (MetalLB's words).
    pub fn allocated(&self, service: &ObjectRef, ips: &[IpAddr]) {
        let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
        self.post(
            EventType::Normal,
            "IPAllocated",
            "Allocate",
            format!("Assigned IP {ips:?}"),
            reference(service),
        );
    }

    /// `AllocationFailed` on a Service, saying why.
    pub fn allocation_failed(&self, service: &ObjectRef, why: &str) {
        self.post(
            EventType::Warning,
            "AllocationFailed",
            "Allocate",
            format!(
                "Failed to allocate IP for \"{}/{}\": {why}",
                service.namespace, service.name
            ),
            reference(service),
        );
    }

    /// `nodeAssigned` on each Service of `vip`, naming this node.
    pub fn node_assigned(&self, services: &[ObjectRef], vip: IpAddr, node: &str) {
        for svc in services {
            self.post(
                EventType::Normal,
                "nodeAssigned",
                "Announce",
                format!("announcing {vip} from node {node}"),
                reference(svc),
            );
        }
    }

    /// `AddressConflict` on each Service of `vip`: another host claims it.
    pub fn address_conflict(
        &self,
        services: &[ObjectRef],
        vip: IpAddr,
        link: &str,
        other_mac: &str,
        node: &str,
    ) {
        for svc in services {
            self.post(
                EventType::Warning,
                "AddressConflict",
                "Announce",
                format!(
                    "another host ({other_mac}) claims {vip} on {link}, which node {node} \
                     announces; defended with a gratuitous announcement (at most every 10 s)"
                ),
                reference(svc),
            );
        }
    }

    /// On this node's Node: entries kept on peers' promises through an API
    /// outage are no longer, because the API answers again or they lapsed.
    pub fn hold_ended(&self, node: &str, vips: usize, held: std::time::Duration, lapsed: bool) {
        let (type_, how) = match lapsed {
            false => (EventType::Normal, "the API answers again"),
            true => (
                EventType::Warning,
                "the hold lapsed and they stopped answering",
            ),
        };
        self.post(
            type_,
            "HoldEnded",
            "Announce",
            format!(
                "node {node} kept {vips} VIP(s) answered on its peers' promises for {:.1} s \
                 while its lease renewals failed; {how}",
                held.as_secs_f64()
            ),
            reference(&ObjectRef::new("Node", "", node)),
        );
    }

    /// Logs each new configuration problem and posts it as a Warning on
    /// the object at fault; problems seen before are not posted again
    /// while they last (`issues`: all of them now, sorted).
    pub fn problems(&self, issues: &[Issue], reported: &mut Reported) {
        reported.0.retain(|i| issues.binary_search(i).is_ok());
        for issue in issues.iter().filter(|i| reported.0.insert((*i).clone())) {
            warn!(issue = %issue, "configuration problem");
            self.post(
                EventType::Warning,
                "ConfigurationProblem",
                "Plan",
                issue.message.clone(),
                reference(&issue.object),
            );
        }
    }

    /// A Warning on this node's Node object, posted before returning (the
    /// agent is about to exit).
    pub async fn node_warning(&self, node: &str, reason: &str, note: String) {
        let reference = reference(&ObjectRef::new("Node", "", node));
        let ev = event(EventType::Warning, reason, "Start", note);
        if let Ok(Err(e)) = timeout(POST_TIMEOUT, self.recorder.publish(&ev, &reference)).await {
            debug!(error = %e, "cannot post event");
        }
    }

    fn post(
        &self,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        reference: ObjectReference,
    ) {
        let ev = event(type_, reason, action, note);
        if self.queue.try_send((ev, reference)).is_err() {
            debug!("event queue full; an event was dropped");
        }
    }
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    }
}

/// The API reference of an object the plan names.
fn reference(o: &ObjectRef) -> ObjectReference {
    let (api_version, namespaced) = match o.kind {
        "IPAddressPool" | "L2Advertisement" => ("metallb.io/v1beta1", true),
        "Node" => ("v1", false),
        _ => ("v1", true),
    };
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(o.kind.into()),
        namespace: Some(o.namespace.clone()).filter(|n| namespaced && !n.is_empty()),
        name: Some(o.name.clone()),
        ..Default::default()
    }
}
