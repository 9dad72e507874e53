//! The `addresses` entries of an IPAddressPool: CIDRs and inclusive ranges.

use std::net::IpAddr;

/// An inclusive range of addresses of one family.
///
/// An IPv4 CIDR of /30 or shorter leaves out its network and broadcast
/// addresses: hosts on the LAN treat them as the subnet's, not as a
/// Service's. A pool that wants them lists them as a range or a /32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddrRange {
    start: IpAddr,
    end: IpAddr,
    /// The network and broadcast addresses left out, for messages.
    edges: Option<(IpAddr, IpAddr)>,
}

impl AddrRange {
    /// `198.18.0.0/28`, `2001:db8::/120` or `198.18.1.10-198.18.1.20`
    /// (spaces around the dash allowed, as MetalLB trims them). A CIDR may
    /// have host bits set (`198.18.0.5/28` is `198.18.0.0/28`), as Go's
    /// `net.ParseCIDR` that MetalLB uses allows.
    pub(crate) fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        if let Some((start, end)) = entry.split_once('-') {
            let start = parse_ip(start.trim())?;
            let end = parse_ip(end.trim())?;
            if start.is_ipv4() != end.is_ipv4() {
                return Err("range ends are of different families".into());
            }
            // IpAddr orders numerically within one family.
            if start > end {
                return Err("range start is after its end".into());
            }
            return Ok(Self {
                start,
                end,
                edges: None,
            });
        }
        let Some((addr, len)) = entry.split_once('/') else {
            return Err("neither a CIDR nor a range".into());
        };
        let addr = parse_ip(addr)?;
        // Digits only: Rust's parse would also take "+28".
        let len: u32 = Some(len)
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| format!("bad prefix length {len:?}"))?;
        match addr {
            IpAddr::V4(a) if len <= 32 => {
                let host = u32::MAX.checked_shr(len).unwrap_or(0);
                let net = u32::from(a) & !host;
                let (first, last) = (net, net | host);
                let ip = |n: u32| IpAddr::from(n.to_be_bytes());
                Ok(if len <= 30 {
                    Self {
                        start: ip(first + 1),
                        end: ip(last - 1),
                        edges: Some((ip(first), ip(last))),
                    }
                } else {
                    Self {
                        start: ip(first),
                        end: ip(last),
                        edges: None,
                    }
                })
            }
            IpAddr::V6(a) if len <= 128 => {
                let host = u128::MAX.checked_shr(len).unwrap_or(0);
                let net = u128::from(a) & !host;
                Ok(Self {
                    start: IpAddr::from(net.to_be_bytes()),
                    end: IpAddr::from((net | host).to_be_bytes()),
                    edges: None,
                })
            }
            _ => Err(format!("prefix length {len} too long")),
        }
    }

    /// The first address of the range.
    pub(crate) fn start(&self) -> IpAddr {
        self.start
    }

    /// The last address of the range (inclusive).
    pub(crate) fn end(&self) -> IpAddr {
        self.end
    }

    /// When `ip` is the network or broadcast address this CIDR leaves
    /// out, which of the two it is.
    pub(crate) fn left_out(&self, ip: IpAddr) -> Option<&'static str> {
        let (network, broadcast) = self.edges?;
        (ip == network)
            .then_some("network")
            .or((ip == broadcast).then_some("broadcast"))
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4() && self.start <= ip && ip <= self.end
    }

    pub(crate) fn overlaps(&self, other: &AddrRange) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && self.start <= other.end
            && other.start <= self.end
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("bad address {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(entry: &str) -> Option<(String, String)> {
        AddrRange::parse(entry)
            .ok()
            .map(|r| (r.start.to_string(), r.end.to_string()))
    }

    fn pair(a: &str, b: &str) -> Option<(String, String)> {
        Some((a.to_owned(), b.to_owned()))
    }

    #[test]
    fn pool_entries_parse() {
        #[rustfmt::skip]
        let cases = [
            ("198.18.0.0/28",            pair("198.18.0.1", "198.18.0.14")),
            ("198.18.0.5/28",            pair("198.18.0.1", "198.18.0.14")),
            ("198.18.0.4/30",            pair("198.18.0.5", "198.18.0.6")),
            ("198.18.0.4/31",            pair("198.18.0.4", "198.18.0.5")),
            ("198.18.0.7/32",            pair("198.18.0.7", "198.18.0.7")),
            ("0.0.0.0/0",                pair("0.0.0.1", "255.255.255.254")),
            ("198.18.0.0-198.18.0.15",   pair("198.18.0.0", "198.18.0.15")),
            ("2001:db8::/120",           pair("2001:db8::", "2001:db8::ff")),
            ("::/0",                     pair("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            ("198.18.1.10-198.18.1.20",  pair("198.18.1.10", "198.18.1.20")),
            (" 198.18.1.10 - 198.18.1.10 ", pair("198.18.1.10", "198.18.1.10")),
            ("2001:db8::1-2001:db8::9",  pair("2001:db8::1", "2001:db8::9")),
            ("198.18.0.0/33",            None),
            ("2001:db8::/129",           None),
            ("198.18.0.0/x",             None),
            ("198.18.0.0/-1",            None),
            ("198.18.0.0/+28",           None),
            ("198.18.0.0/",              None),
            ("198.18.0.1",               None),
            ("198.18.1.20-198.18.1.10",  None),
            ("198.18.1.10-2001:db8::1",  None),
            ("198.18.1.10-",             None),
            ("not-an-address",           None),
            ("",                         None),
        ];
        for (entry, want) in cases {
            assert_eq!(range(entry), want, "{entry:?}");
        }
    }

    #[test]
    fn contains_and_overlaps_respect_family() {
        let parse = |s| AddrRange::parse(s).expect("valid");
        let v4 = parse("0.0.0.0/0");
        let v6 = parse("::/0");
        assert!(v4.contains("198.18.0.1".parse().expect("ip")));
        assert!(!v4.contains("::1".parse().expect("ip")));
        assert!(!v6.contains("198.18.0.1".parse().expect("ip")));
        assert!(!v4.overlaps(&v6));
        assert!(parse("198.18.0.0/28").overlaps(&parse("198.18.0.14-198.18.0.20")));
        assert!(!parse("198.18.0.0/28").overlaps(&parse("198.18.0.15-198.18.0.20")));
        let net = parse("198.18.0.8/29");
        assert_eq!(
            net.left_out("198.18.0.8".parse().expect("ip")),
            Some("network")
        );
        assert_eq!(
            net.left_out("198.18.0.15".parse().expect("ip")),
            Some("broadcast")
        );
        assert_eq!(net.left_out("198.18.0.9".parse().expect("ip")), None);
    }
}
