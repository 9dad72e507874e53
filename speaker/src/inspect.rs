//! `speaker inspect`: what this node's data plane answers, read from the
//! maps a running `speaker agent` or `speaker static` pinned: each VIP
//! entry with its link, MAC and time to expiry, the conflicts seen on it,
//! and the verdict counters. A table, or `--json`.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use speaker_common::maps::{Conflict, Counters, FAMILY_IPV4, Reason, VipEntry, VipKey, VipStats};

use crate::dataplane::{Maps, now_ns};

/// One VIP entry as printed.
struct Row {
    vip: IpAddr,
    link: String,
    ifindex: u32,
    vlan: u16,
    mac: String,
    /// `None`: never expires; negative: expired that long ago.
    expires_in_ms: Option<i64>,
    /// Requests for it that reached its entry, and the ones answered.
    requests: u64,
    replies: u64,
    conflicts: u64,
    claimant: Option<String>,
    claimed_ago_ms: Option<u64>,
}

/// The report for the maps pinned in `dir`.
pub fn report(dir: &Path, as_json: bool) -> Result<String> {
    let maps = Maps::open_pinned(dir).with_context(|| {
        format!(
            "no speaker maps pinned in {} (is an agent running there? see --bpffs)",
            dir.display()
        )
    })?;
    let now = now_ns();
    let conflicts: HashMap<VipKey, Conflict> = maps
        .conflicts()
        .context("cannot read the conflicts")?
        .into_iter()
        .collect();
    let stats: HashMap<VipKey, VipStats> = maps
        .vip_stats()
        .context("cannot read the request counts")?
        .into_iter()
        .collect();
    let mut rows: Vec<Row> = maps
        .vips()
        .context("cannot read the VIPs")?
        .iter()
        .map(|(key, entry)| {
            let s = stats.get(key).copied().unwrap_or_default();
            row(key, entry, conflicts.get(key), s, now)
        })
        .collect();
    rows.sort_by(|a, b| (a.vip, &a.link).cmp(&(b.vip, &b.link)));
    let counters = maps.counters().context("cannot read the counters")?;
    Ok(if as_json {
        json_report(&rows, &counters)
    } else {
        table(&rows, &counters)
    })
}

fn row(
    key: &VipKey,
    entry: &VipEntry,
    conflict: Option<&Conflict>,
    stats: VipStats,
    now: u64,
) -> Row {
    let vip = if key.family == FAMILY_IPV4 {
        let [a, b, c, d, ..] = key.addr;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    } else {
        IpAddr::V6(Ipv6Addr::from(key.addr))
    };
    let name = interface_name(key.ifindex).unwrap_or_else(|| format!("if{}", key.ifindex));
    let link = match key.vlan_id {
        0 => name,
        vid => format!("{name}:{vid}"),
    };
    let expires_in_ms = (entry.expires_ns != VipEntry::NEVER)
        .then(|| (entry.expires_ns as i128 - now as i128) / 1_000_000)
        .map(|ms| ms.clamp(i64::MIN.into(), i64::MAX.into()) as i64);
    let seen = conflict.filter(|c| c.count > 0);
    Row {
        vip,
        link,
        ifindex: key.ifindex,
        vlan: key.vlan_id,
        mac: mac(&entry.mac),
        expires_in_ms,
        requests: stats.requests,
        replies: stats.replies,
        conflicts: seen.map_or(0, |c| c.count),
        claimant: seen.map(|c| mac(&c.last_mac)),
        claimed_ago_ms: seen.map(|c| now.saturating_sub(c.last_seen_ns) / 1_000_000),
    }
}

fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

fn mac(m: &[u8; 6]) -> String {
    let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

fn expiry(ms: Option<i64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms <= 0 => format!("expired {:.1}s ago", -ms as f64 / 1000.0),
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
    }
}

fn table(rows: &[Row], counters: &Counters) -> String {
    let mut out = String::new();
    let head = [
        "VIP",
        "LINK",
        "MAC",
        "EXPIRES IN",
        "REQUESTS",
        "ANSWERED",
        "CONFLICTS",
        "LAST CLAIMANT",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let claimant = match (&r.claimant, r.claimed_ago_ms) {
                (Some(m), Some(ago)) => format!("{m} ({:.1}s ago)", ago as f64 / 1000.0),
                _ => "-".into(),
            };
            [
                r.vip.to_string(),
                r.link.clone(),
                r.mac.clone(),
                expiry(r.expires_in_ms),
                r.requests.to_string(),
                r.replies.to_string(),
                r.conflicts.to_string(),
                claimant,
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].len())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..head.len()).map(width).collect();
    let line = |out: &mut String, cols: &[&str]| {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &head);
    for c in &cells {
        line(&mut out, &c.each_ref().map(String::as_str));
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no VIP entries)");
    }
    let _ = writeln!(
        out,
        "\nverdicts since the program was loaded (the others 0):"
    );
    for r in Reason::ALL.iter().filter(|r| counters.get(**r) > 0) {
        let _ = writeln!(out, "  {:<24} {}", r.name(), counters.get(*r));
    }
    out
}

fn json_report(rows: &[Row], counters: &Counters) -> String {
    let vips: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "vip": r.vip.to_string(),
                "link": r.link,
                "ifindex": r.ifindex,
                "vlan": r.vlan,
                "mac": r.mac,
                "expires_in_ms": r.expires_in_ms,
                "live": r.expires_in_ms.is_none_or(|ms| ms > 0),
                "requests": r.requests,
                "answered": r.replies,
                "conflicts": r.conflicts,
                "last_claimant": r.claimant,
                "last_claim_ago_ms": r.claimed_ago_ms,
            })
        })
        .collect();
    let verdicts: serde_json::Map<String, Value> = Reason::ALL
        .iter()
        .map(|r| (r.name().to_owned(), json!(counters.get(*r))))
        .collect();
    let mut out = json!({"vips": vips, "verdicts": verdicts}).to_string();
    out.push('\n');
    out
}
