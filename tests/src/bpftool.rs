//! Reading the pinned maps the way a user does: with bpftool.

use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::{Context as _, Result};

use crate::netns::run;

fn dump(pin: &Path) -> Result<serde_json::Value> {
    let out = run(Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin))?;
    serde_json::from_str(&out).with_context(|| format!("bpftool output for {}", pin.display()))
}

/// The COUNTERS map, summed over CPUs, by field name.
pub fn counters(bpffs: &Path) -> Result<BTreeMap<String, u64>> {
    let v = dump(&bpffs.join("COUNTERS"))?;
    let mut sum = BTreeMap::new();
    let cpus = v[0]["formatted"]["values"]
        .as_array()
        .context("COUNTERS has no BTF-formatted values")?;
    for cpu in cpus {
        let fields = cpu["value"].as_object().context("per-CPU value")?;
        for (name, n) in fields {
            *sum.entry(name.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
        }
    }
    Ok(sum)
}

/// One CONFLICTS entry: the IPv4 VIP, frames summed over CPUs, latest MAC.
pub type ConflictRow = ([u8; 4], u64, [u8; 6]);

/// The CONFLICTS map, one row per VIP.
pub fn conflicts(bpffs: &Path) -> Result<Vec<ConflictRow>> {
    let v = dump(&bpffs.join("CONFLICTS"))?;
    let mut out = Vec::new();
    for e in v.as_array().context("CONFLICTS dump")? {
        let f = &e["formatted"];
        let addr: Vec<u8> = f["key"]["addr"]
            .as_array()
            .context("key.addr")?
            .iter()
            .map(|b| b.as_u64().unwrap_or(0) as u8)
            .collect();
        let (mut count, mut latest, mut mac) = (0, 0, [0u8; 6]);
        for cpu in f["values"].as_array().context("values")? {
            let c = &cpu["value"];
            count += c["count"].as_u64().unwrap_or(0);
            let seen = c["last_seen_ns"].as_u64().unwrap_or(0);
            if c["count"].as_u64().unwrap_or(0) > 0 && seen >= latest {
                latest = seen;
                for (m, b) in mac.iter_mut().zip(c["last_mac"].as_array().context("mac")?) {
                    *m = b.as_u64().unwrap_or(0) as u8;
                }
            }
        }
        out.push(([addr[0], addr[1], addr[2], addr[3]], count, mac));
    }
    Ok(out)
}
