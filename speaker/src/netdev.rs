//! Network interface lookups through ioctl on the caller's own network
//! namespace (sysfs may show another namespace's devices).

use std::{
    ffi::CString,
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use speaker_common::wire::ARPHRD_ETHER;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetdevError {
    #[error("interface {0:?}: no such interface in this network namespace")]
    NotFound(String),
    #[error("interface {0:?}: name is not valid")]
    BadName(String),
    #[error("interface {name:?}: {what}")]
    Io {
        name: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("interface {name:?}: {reason}")]
    Unsuitable { name: String, reason: String },
}

/// An Ethernet interface the responder can run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

impl Interface {
    /// Looks `name` up and checks that ARP can be answered on it: an
    /// Ethernet device without IFF_NOARP.
    pub fn lookup(name: &str) -> Result<Self, NetdevError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            return Err(NetdevError::BadName(name.to_string()));
        }
        let cname = CString::new(name).map_err(|_| NetdevError::BadName(name.to_string()))?;
        // SAFETY: valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(NetdevError::NotFound(name.to_string()));
        }
        let sock = control_socket().map_err(|source| NetdevError::Io {
            name: name.to_string(),
            what: "cannot open a control socket",
            source,
        })?;
        let mut req = ifreq(name);
        ioctl(&sock, libc::SIOCGIFHWADDR, &mut req).map_err(|source| NetdevError::Io {
            name: name.to_string(),
            what: "cannot read hardware address",
            source,
        })?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        if hw.sa_family != ARPHRD_ETHER {
            return Err(NetdevError::Unsuitable {
                name: name.to_string(),
                reason: format!("not an Ethernet device (ARPHRD {})", hw.sa_family),
            });
        }
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *m = *b as u8;
        }
        let flags = flags(&sock, name)?;
        if flags & libc::IFF_NOARP != 0 {
            return Err(NetdevError::Unsuitable {
                name: name.to_string(),
                reason: "ARP is off (IFF_NOARP)".into(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            ifindex,
            mac,
        })
    }

    /// The interface with index `ifindex`, looked up as [`Interface::lookup`].
    pub fn by_index(ifindex: u32) -> Result<Self, NetdevError> {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
        let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
        if name.is_null() {
            return Err(NetdevError::NotFound(format!("ifindex {ifindex}")));
        }
        // SAFETY: on success buf holds a NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        Self::lookup(&name.to_string_lossy())
    }

    /// Whether the interface is up with carrier (IFF_UP and IFF_RUNNING).
    pub fn is_running(&self) -> Result<bool, NetdevError> {
        let sock = control_socket().map_err(|source| NetdevError::Io {
            name: self.name.clone(),
            what: "cannot open a control socket",
            source,
        })?;
        let f = flags(&sock, &self.name)?;
        Ok(f & libc::IFF_UP != 0 && f & libc::IFF_RUNNING != 0)
    }
}

/// Where a VIP is announced: an interface, untagged or on one 802.1Q VLAN
/// of it (written `eth0:100`; Linux interface names cannot hold a colon).
/// The XDP program runs on the interface either way; a VLAN's frames are
/// recognised by their tag.
#[derive(Clone, Debug)]
pub struct Link {
    pub iface: Interface,
    /// 0 for untagged.
    pub vlan_id: u16,
}

impl Link {
    /// Parses and looks up `IF` or `IF:VID` (VID 1 to 4094).
    pub fn lookup(spec: &str) -> Result<Self, NetdevError> {
        let (name, vlan_id) = match spec.split_once(':') {
            None => (spec, 0),
            Some((name, vid)) => match vid.parse::<u16>() {
                Ok(v) if (1..=4094).contains(&v) => (name, v),
                _ => {
                    return Err(NetdevError::Unsuitable {
                        name: spec.to_string(),
                        reason: "a VLAN ID after ':' must be 1 to 4094".into(),
                    });
                }
            },
        };
        Ok(Self {
            iface: Interface::lookup(name)?,
            vlan_id,
        })
    }
}

impl Link {
    /// The data plane's key for `vip` on this link.
    pub fn key(&self, vip: std::net::IpAddr) -> speaker_common::maps::VipKey {
        use speaker_common::maps::VipKey;
        let (ifindex, vlan) = (self.iface.ifindex, self.vlan_id);
        match vip {
            std::net::IpAddr::V4(a) => VipKey::ipv4(ifindex, vlan, a.octets()),
            std::net::IpAddr::V6(a) => VipKey::ipv6(ifindex, vlan, a.octets()),
        }
    }
}

/// Links are ordered (and equal) by where their frames arrive: interface
/// index, then VLAN.
impl PartialEq for Link {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Link {}

impl PartialOrd for Link {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Link {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.iface.ifindex, self.vlan_id).cmp(&(other.iface.ifindex, other.vlan_id))
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.vlan_id {
            0 => write!(f, "{}", self.iface.name),
            v => write!(f, "{}:{v}", self.iface.name),
        }
    }
}

/// Membership of an IPv6 multicast group on an interface, left on drop.
/// NICs drop multicast frames they were not told to accept, and a Neighbor
/// Solicitation goes to the VIP's solicited-node group; joining it (an MLD
/// join) makes the NIC accept 33:33:ff:xx:xx:xx and tells MLD-snooping
/// switches to forward the group here. The kernel leaves it when the socket
/// closes, also when the process dies.
pub struct Membership {
    _sock: OwnedFd,
}

impl Membership {
    pub fn join(ifindex: u32, group: std::net::Ipv6Addr) -> io::Result<Self> {
        // SAFETY: socket(2); the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: group.octets(),
            },
            ipv6mr_interface: ifindex,
        };
        // SAFETY: setsockopt with a valid ipv6_mreq of the size given.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_ADD_MEMBERSHIP,
                (&mreq as *const libc::ipv6_mreq).cast(),
                mem::size_of::<libc::ipv6_mreq>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { _sock: sock })
    }
}

fn flags(sock: &OwnedFd, name: &str) -> Result<i32, NetdevError> {
    let mut req = ifreq(name);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req).map_err(|source| NetdevError::Io {
        name: name.to_string(),
        what: "cannot read flags",
        source,
    })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(i32::from(unsafe { req.ifr_ifru.ifru_flags }))
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

fn ioctl(sock: &OwnedFd, request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: req is a valid ifreq for these SIOCGIF* requests.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_before_asking_the_kernel() {
        for bad in ["", "a/b", "with space", "abcdefghijklmnopq"] {
            assert!(
                matches!(Interface::lookup(bad), Err(NetdevError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_interface_is_a_clear_error() {
        let e = Interface::lookup("spk-nonexist0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "interface \"spk-nonexist0\": no such interface in this network namespace"
        );
    }

    #[test]
    fn loopback_is_refused() {
        // lo exists in every namespace and is not Ethernet.
        let e = Interface::lookup("lo").unwrap_err();
        assert!(matches!(e, NetdevError::Unsuitable { .. }), "{e}");
    }

    #[test]
    fn vlan_ids_are_checked() {
        for bad in ["lo:0", "lo:4095", "lo:x", "lo:"] {
            let e = Link::lookup(bad).unwrap_err();
            assert!(e.to_string().contains("VLAN ID"), "{bad}: {e}");
        }
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(fmt_mac(&[0x02, 0, 0xab, 1, 2, 0xff]), "02:00:ab:01:02:ff");
    }
}
