//! Writing each IPAddressPool's `status` counters (`assignedIPv4`,
//! `assignedIPv6`, `availableIPv4`, `availableIPv6`), as MetalLB's
//! controller does, so users see them where they look. A pool is written
//! only when what it shows differs from the counts, at most once a second,
//! and only while this process holds the controller Lease.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::{task::JoinSet, time::Instant, time::timeout};
use tracing::warn;

use crate::{
    allocation::{FamilyCount, PoolCount},
    k8s::leader::Authority,
    metallb::{IPAddressPool, IPAddressPoolStatus},
};

const CONCURRENT_WRITES: usize = 16;
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a written status is trusted before the watch shows it.
const SETTLE: Duration = Duration::from_secs(5);

pub struct PoolStatusWriter {
    api: Api<IPAddressPool>,
    authority: Authority,
    /// The last status written to each pool, and when.
    sent: BTreeMap<String, (IPAddressPoolStatus, Instant)>,
    in_flight: BTreeSet<String>,
    pub tasks: JoinSet<(String, bool)>,
}

impl PoolStatusWriter {
    pub fn new(client: Client, namespace: &str, authority: Authority) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            authority,
            sent: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Starts a write for each pool whose status differs from its counts
    /// (and was not just written with them).
    pub fn launch(&mut self, counts: &[PoolCount], pools: &BTreeMap<String, IPAddressPool>) {
        for count in counts {
            if self.tasks.len() >= CONCURRENT_WRITES {
                return;
            }
            let name = &count.pool;
            let Some(pool) = pools.get(name) else {
                continue;
            };
            let want = status(count);
            let recent = self
                .sent
                .get(name)
                .is_some_and(|(s, at)| *s == want && at.elapsed() < SETTLE);
            if pool.status.as_ref() == Some(&want) || recent || self.in_flight.contains(name) {
                continue;
            }
            self.in_flight.insert(name.clone());
            self.sent
                .insert(name.clone(), (want.clone(), Instant::now()));
            self.spawn(name.clone(), want);
        }
    }

    /// A write finished; a failed one is tried again at the next launch.
    pub fn finished(&mut self, pool: &str, ok: bool) {
        self.in_flight.remove(pool);
        if !ok {
            self.sent.remove(pool);
        }
    }

    fn spawn(&mut self, pool: String, want: IPAddressPoolStatus) {
        let api = self.api.clone();
        let authority = self.authority.clone();
        self.tasks.spawn(async move {
            if !authority.holds() {
                return (pool, false);
            }
            let patch = Patch::Merge(json!({ "status": want }));
            let sent = timeout(
                WRITE_TIMEOUT,
                api.patch_status(&pool, &PatchParams::default(), &patch),
            )
            .await;
            let ok = match sent {
                Ok(Ok(_)) => true,
                // Deleted meanwhile: nothing to write.
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => true,
                Ok(Err(e)) => {
                    warn!(%pool, error = %e, "cannot write the pool's status");
                    false
                }
                Err(_) => false,
            };
            (pool, ok)
        });
    }
}

/// MetalLB's counters for `count` (int64: a pool larger than that shows
/// the largest).
fn status(count: &PoolCount) -> IPAddressPoolStatus {
    let assigned = |f: &FamilyCount| Some(i64::try_from(f.in_use).unwrap_or(i64::MAX));
    let available = |f: &FamilyCount| {
        let free = f.total.saturating_sub(u128::from(f.in_use));
        Some(i64::try_from(free).unwrap_or(i64::MAX))
    };
    IPAddressPoolStatus {
        assigned_ipv4: assigned(&count.ipv4),
        assigned_ipv6: assigned(&count.ipv6),
        available_ipv4: available(&count.ipv4),
        available_ipv6: available(&count.ipv6),
    }
}
