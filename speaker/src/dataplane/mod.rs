//! The kernel side as the agent sees it: loading the XDP object, attaching
//! it, pinning its maps, and reading and writing them.

mod diff;
mod objects;
mod pins;

use std::{
    collections::HashMap as StdHashMap,
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
pub use diff::MapDiff;
pub use objects::SPEAKER_XDP;
use pins::Pins;
pub use pins::{PinLock, Predecessor, VERSION_PIN};
use speaker_common::maps::{
    CONFLICTS_MAP, COUNTERS_MAP, Conflict, Counters, FILTER_MAP, FILTER_WORDS, PINNED_MAPS,
    VIP_STATS_MAP, VIPS_MAP, VipEntry, VipKey, VipStats, XDP_PROGRAM, filter_slot,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::netdev::Interface;

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(
        "this speaker binary was built without its XDP program; build it with `cargo xtask build`"
    )]
    NoObject,
    #[error("cannot load the XDP object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("cannot load the XDP program into the kernel")]
    Program(#[source] Box<aya::programs::ProgramError>),
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    #[error("cannot attach to {iface} in {mode} mode")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("{path}: {what}")]
    Bpffs {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not on a bpf filesystem (mount one, e.g. `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },
    #[error(
        "another agent on this host uses {path} (it holds the folder's lock): one agent per host"
    )]
    Busy { path: PathBuf },
    #[error("cannot pin map {map} at {path}")]
    Pin {
        map: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// How to attach the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only: slower, works on any device.
    Generic,
}

/// The loaded XDP responder and its maps.
pub struct Dataplane {
    // Dropping `ebpf` detaches the links it holds (fd-based).
    ebpf: Ebpf,
    maps: Maps,
    filter: Filter,
    links: StdHashMap<u32, Attached>,
    pins: Pins,
    _lock: Option<PinLock>,
}

/// How the program is attached to an interface.
enum Attached {
    /// A link the program holds (unpinned: no bpffs folder, or a kernel
    /// without XDP bpf_links); ends with the process.
    Held(XdpLinkId),
    /// A link pinned at `LINK_<ifindex>`, which keeps it attached after
    /// the process ends, until the pin is removed.
    Pinned(FdLink),
}

/// What [`Dataplane::open`] found in its folder.
#[derive(Debug, Default)]
pub struct Found {
    /// The entries a predecessor left answering (adopted with its maps and
    /// links, the program swapped for this one in place).
    pub entries: Vec<(VipKey, VipEntry)>,
    /// Why what was left could not be adopted (it was cleared instead).
    pub not_adopted: Option<String>,
}

impl Dataplane {
    /// Loads the embedded responder into the kernel and pins its maps
    /// under `pin_dir` (on a bpffs, locked: see [`PinLock`]), replacing
    /// what an earlier run left there, so `bpftool map dump pinned
    /// DIR/VIPS` works.
    pub fn load(pin_dir: &Path) -> Result<Self, DataplaneError> {
        let lock = PinLock::take(pin_dir)?;
        Self::open(lock, false).map(|(dp, _)| dp)
    }

    /// Loads the embedded responder over the folder `lock` holds: when
    /// `adopt` and a predecessor left its data plane there for a restart
    /// (see [`PinLock::predecessor`]), its maps are reused and its links
    /// made to run this program, atomically, so answering never stops;
    /// otherwise whatever was left is cleared first.
    pub fn open(lock: PinLock, adopt: bool) -> Result<(Self, Found), DataplaneError> {
        let dir = lock.dir().to_path_buf();
        let mut found = Found::default();
        let adopting = match lock.predecessor() {
            Ok(_) if adopt => true,
            Ok(_) => false,
            Err(why) => {
                if let Some(why) = &why {
                    warn!(reason = %why, "the data plane left for a restart cannot be adopted; reloading");
                }
                found.not_adopted = why;
                false
            }
        };
        if !adopting {
            Pins::clear(&dir)?;
        }
        let mut dp = Self::load_with(SPEAKER_XDP, Some(&dir))?;
        dp._lock = Some(lock);
        if adopting {
            found.entries = dp.maps.vips()?;
            dp.filter.adopt(found.entries.iter().map(|(k, _)| *k))?;
            dp.adopt_links(&dir);
            // Adopted: nothing is left for a restart any more.
            let _ = fs::remove_file(dir.join(VERSION_PIN));
            info!(
                entries = found.entries.len(),
                "adopted the data plane left for a restart"
            );
        }
        Ok((dp, found))
    }

    /// Loads a responder object (maps unpinned), for tests and benchmarks.
    pub fn load_object(object: &[u8], pin_dir: Option<&Path>) -> Result<Self, DataplaneError> {
        Self::load_with(object, pin_dir)
    }

    /// Loads a responder object, its maps pinned in `pin_dir` when given
    /// (reused when pinned there already).
    fn load_with(object: &[u8], pin_dir: Option<&Path>) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        let paths: Vec<(&str, PathBuf)> = pin_dir
            .map(|d| PINNED_MAPS.iter().map(|n| (*n, d.join(n))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(|e| DataplaneError::Program(Box::new(e)))?;
        program
            .load()
            .map_err(|e| DataplaneError::Program(Box::new(e)))?;
        let maps = Maps {
            vips: take_map(&mut ebpf, VIPS_MAP)?,
            counters: take_map(&mut ebpf, COUNTERS_MAP)?,
            conflicts: take_map(&mut ebpf, CONFLICTS_MAP)?,
            stats: take_map(&mut ebpf, VIP_STATS_MAP)?,
        };
        let filter = Filter::new(take_map(&mut ebpf, FILTER_MAP)?);
        Ok(Self {
            ebpf,
            maps,
            filter,
            links: StdHashMap::new(),
            pins: Pins::new(pin_dir),
            _lock: None,
        })
    }

    fn xdp(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(|e| DataplaneError::Program(Box::new(e)))
    }

    /// Makes each pinned link run this program (bpf_link_update: the old
    /// program answers until the new one does). A link that cannot be
    /// taken over is removed, which detaches it; the interface is attached
    /// afresh when needed.
    fn adopt_links(&mut self, dir: &Path) {
        for (ifindex, path) in Pins::links(dir) {
            let taken = (|| -> Result<FdLink, String> {
                let pinned = PinnedLink::from_pin(&path).map_err(|e| e.to_string())?;
                let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| e.to_string())?;
                let program = self.xdp().map_err(|e| e.to_string())?;
                let id = program.attach_to_link(link).map_err(|e| e.to_string())?;
                let link = program.take_link(id).map_err(|e| e.to_string())?;
                FdLink::try_from(link).map_err(|e| e.to_string())
            })();
            match taken {
                Ok(link) => {
                    self.links.insert(ifindex, Attached::Pinned(link));
                }
                Err(error) => {
                    warn!(ifindex, %error, "cannot take over the link left for a restart; detaching it");
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }

    /// The loaded program, for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(XDP_PROGRAM)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(|e| DataplaneError::Program(Box::new(e)))
    }

    /// Attaches to `iface`, once (a link adopted from a predecessor counts).
    pub fn attach(&mut self, iface: &Interface, mode: AttachMode) -> Result<(), DataplaneError> {
        if self.links.contains_key(&iface.ifindex) {
            return Ok(());
        }
        let pin = self.pins.dir().map(|d| Pins::link_path(d, iface.ifindex));
        let program = self.xdp()?;
        let attempt = |program: &mut Xdp, m: XdpMode, label: &'static str| {
            program
                .attach_to_if_index(iface.ifindex, m)
                .map_err(|e| DataplaneError::Attach {
                    iface: iface.name.clone(),
                    mode: label,
                    source: Box::new(e),
                })
        };
        let (link, used) = match mode {
            AttachMode::Native => (
                attempt(program, XdpMode::Driver, "native")?,
                XdpMode::Driver,
            ),
            AttachMode::Generic => (attempt(program, XdpMode::Skb, "generic")?, XdpMode::Skb),
            AttachMode::Auto => match attempt(program, XdpMode::Driver, "native") {
                Ok(link) => (link, XdpMode::Driver),
                Err(native) => {
                    warn!(
                        interface = %iface.name,
                        error = %error_chain(&native),
                        "native XDP is not available; falling back to generic (skb) mode, \
                         which answers from the kernel stack at lower speed"
                    );
                    (attempt(program, XdpMode::Skb, "generic")?, XdpMode::Skb)
                }
            },
        };
        // Pinned, the program stays attached after this process ends, for
        // a successor to adopt (see `keep`); removing the pin detaches it.
        let attached = match pin {
            Some(path) => match pin_link(program, link, &path) {
                Ok(pinned) => Attached::Pinned(pinned),
                Err(error) => {
                    warn!(interface = %iface.name, %error,
                        "cannot pin the XDP link: a restart of the agent will not keep it attached");
                    Attached::Held(program.attach_to_if_index(iface.ifindex, used).map_err(
                        |e| DataplaneError::Attach {
                            iface: iface.name.clone(),
                            mode: "again",
                            source: Box::new(e),
                        },
                    )?)
                }
            },
            None => Attached::Held(link),
        };
        self.links.insert(iface.ifindex, attached);
        info!(interface = %iface.name, mode = ?used, "XDP responder attached");
        Ok(())
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) {
        let dir = self.pins.dir().map(Path::to_path_buf);
        let links: Vec<(u32, Attached)> = self.links.drain().collect();
        for (ifindex, link) in links {
            match link {
                Attached::Held(id) => {
                    if let Ok(program) = self.xdp()
                        && let Err(e) = program.detach(id)
                    {
                        warn!(ifindex, error = %error_chain(&e), "cannot detach XDP program");
                    }
                }
                // Dropping the last holder of a link detaches it.
                Attached::Pinned(link) => {
                    if let Some(dir) = &dir {
                        let _ = fs::remove_file(Pins::link_path(dir, ifindex));
                    }
                    drop(link);
                }
            }
        }
    }

    /// Removes the pins (and their folder, when empty).
    pub fn unpin(&mut self) {
        self.pins.remove();
    }

    /// Whether [`Dataplane::keep`] would leave every link attached (pinned:
    /// kernels without XDP bpf_links cannot).
    pub fn keepable(&self) -> bool {
        self.pins.dir().is_some()
            && self
                .links
                .values()
                .all(|l| matches!(l, Attached::Pinned(_)))
    }

    /// Ends this process's hold on the data plane, leaving it running: the
    /// program attached through its pinned links, the maps pinned, and
    /// `VERSION` naming `instance`, for a successor to adopt. Entries go on
    /// answering until their expiry. Links that could not be pinned are
    /// detached (they end with the process anyway).
    pub fn keep(mut self, instance: &str) -> Result<(), DataplaneError> {
        let links: Vec<(u32, Attached)> = self.links.drain().collect();
        for (ifindex, link) in links {
            match link {
                Attached::Pinned(link) => drop(link),
                Attached::Held(id) => {
                    warn!(ifindex, "the XDP link is not pinned: detached");
                    if let Ok(program) = self.xdp() {
                        let _ = program.detach(id);
                    }
                }
            }
        }
        self.pins.keep(instance)
    }

    /// Inserts or replaces a VIP entry. The filter bit goes first, so the
    /// program never skips a VIP it has.
    pub fn set_vip(&mut self, key: &VipKey, entry: &VipEntry) -> Result<(), DataplaneError> {
        self.filter.add(key)?;
        self.maps
            .vips
            .insert(key, entry, 0)
            .map_err(|source| DataplaneError::Map {
                map: VIPS_MAP,
                source,
            })
    }

    /// Replaces many VIP entries in one system call (BPF_MAP_UPDATE_BATCH,
    /// Linux 5.6): a renewal moves every owned entry's expiry at once, and
    /// a thousand updates one by one cost milliseconds. One by one where
    /// the kernel has no batch operation, or the batch fails part-way
    /// (updates are idempotent).
    pub fn set_vips(&mut self, entries: &[(VipKey, VipEntry)]) -> Result<(), DataplaneError> {
        for (key, _) in entries {
            self.filter.add(key)?;
        }
        let (keys, values): (Vec<VipKey>, Vec<VipEntry>) = entries.iter().copied().unzip();
        if keys.len() > 1 && update_batch(&self.maps.vips, &keys, &values).is_ok() {
            return Ok(());
        }
        for (key, entry) in entries {
            self.set_vip(key, entry)?;
        }
        Ok(())
    }

    /// Removes a VIP entry (absent is fine), and its request counts; its
    /// filter bit is cleared after.
    pub fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        let gone = |map, result: Result<(), aya::maps::MapError>| match result {
            Err(e) if !is_not_found(&e) => Err(DataplaneError::Map { map, source: e }),
            _ => Ok(()),
        };
        gone(VIPS_MAP, self.maps.vips.remove(key))?;
        gone(VIP_STATS_MAP, self.maps.stats.remove(key))?;
        self.filter.remove(key)
    }

    /// Applies a repair: removals first, then the entries to set.
    pub fn apply(&mut self, diff: &MapDiff) -> Result<(), DataplaneError> {
        for key in &diff.remove {
            self.remove_vip(key)?;
        }
        for (key, entry) in &diff.set {
            self.set_vip(key, entry)?;
        }
        Ok(())
    }

    /// The maps, to read.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }
}

/// The maps the program reads and writes, for reading: the loaded
/// program's, or a running agent's opened from their pins (`speaker
/// inspect`). Per-CPU values come summed.
pub struct Maps {
    vips: HashMap<MapData, VipKey, VipEntry>,
    counters: PerCpuArray<MapData, Counters>,
    conflicts: PerCpuHashMap<MapData, VipKey, Conflict>,
    stats: PerCpuHashMap<MapData, VipKey, VipStats>,
}

impl Maps {
    /// The maps pinned in `dir`, read-only in spirit: nothing here writes.
    pub fn open_pinned(dir: &Path) -> Result<Self, DataplaneError> {
        fn open<T>(dir: &Path, name: &'static str) -> Result<T, DataplaneError>
        where
            T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
        {
            let path = dir.join(name);
            let map_err = |source| DataplaneError::Map { map: name, source };
            let data = MapData::from_pin(&path).map_err(map_err)?;
            let map = aya::maps::Map::from_map_data(data).map_err(map_err)?;
            T::try_from(map).map_err(map_err)
        }
        Ok(Self {
            vips: open(dir, VIPS_MAP)?,
            counters: open(dir, COUNTERS_MAP)?,
            conflicts: open(dir, CONFLICTS_MAP)?,
            stats: open(dir, VIP_STATS_MAP)?,
        })
    }

    /// Every entry in the VIP map.
    pub fn vips(&self) -> Result<Vec<(VipKey, VipEntry)>, DataplaneError> {
        self.vips
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| DataplaneError::Map {
                map: VIPS_MAP,
                source,
            })
    }

    /// The verdict counters.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let per_cpu = self
            .counters
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: COUNTERS_MAP,
                source,
            })?;
        let mut total = Counters::default();
        for c in per_cpu.iter() {
            total.add(c);
        }
        Ok(total)
    }

    /// Conflicts per VIP; the MAC is the latest seen on any CPU.
    pub fn conflicts(&self) -> Result<Vec<(VipKey, Conflict)>, DataplaneError> {
        let zero = Conflict {
            count: 0,
            last_seen_ns: 0,
            last_mac: [0; 6],
            _pad: [0; 2],
        };
        per_vip(&self.conflicts, CONFLICTS_MAP, zero, |sum, c| {
            sum.count += c.count;
            if c.count > 0 && c.last_seen_ns >= sum.last_seen_ns {
                sum.last_seen_ns = c.last_seen_ns;
                sum.last_mac = c.last_mac;
            }
        })
    }

    /// Requests and answers per VIP.
    pub fn vip_stats(&self) -> Result<Vec<(VipKey, VipStats)>, DataplaneError> {
        per_vip(&self.stats, VIP_STATS_MAP, VipStats::default(), |sum, s| {
            sum.requests += s.requests;
            sum.replies += s.replies;
        })
    }
}

/// Every entry of a per-CPU map keyed by VIP, its CPUs' values folded
/// into one by `add` from `zero`.
fn per_vip<T: aya::Pod + Copy>(
    map: &PerCpuHashMap<MapData, VipKey, T>,
    name: &'static str,
    zero: T,
    add: impl Fn(&mut T, &T),
) -> Result<Vec<(VipKey, T)>, DataplaneError> {
    let mut out = Vec::new();
    for item in map.iter() {
        let (key, per_cpu) = item.map_err(|source| DataplaneError::Map { map: name, source })?;
        let mut sum = zero;
        for v in per_cpu.iter() {
            add(&mut sum, v);
        }
        out.push((key, sum));
    }
    Ok(out)
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// The agent's side of the VIP prefilter (see speaker_common::maps::FILTER_MAP):
/// the keys whose bits it set, and a copy of the words it wrote.
struct Filter {
    map: Array<MapData, u64>,
    keys: std::collections::HashSet<VipKey>,
    users: StdHashMap<u16, u32>,
    words: Vec<u64>,
}

impl Filter {
    fn new(map: Array<MapData, u64>) -> Self {
        Self {
            map,
            keys: Default::default(),
            users: StdHashMap::new(),
            words: vec![0; FILTER_WORDS as usize],
        }
    }

    /// Takes over the bits of adopted entries: the words are rebuilt from
    /// their keys and all written, so no adopted VIP's bit is ever cleared
    /// by a later write.
    fn adopt(&mut self, keys: impl Iterator<Item = VipKey>) -> Result<(), DataplaneError> {
        for key in keys {
            if self.keys.insert(key) {
                let slot = filter_slot(&key.addr);
                *self.users.entry(slot).or_insert(0) += 1;
                self.words[usize::from(slot >> 6)] |= 1u64 << (slot & 63);
            }
        }
        for (index, word) in self.words.iter().enumerate() {
            self.map
                .set(index as u32, *word, 0)
                .map_err(|source| DataplaneError::Map {
                    map: FILTER_MAP,
                    source,
                })?;
        }
        Ok(())
    }

    fn add(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        if !self.keys.insert(*key) {
            return Ok(());
        }
        let slot = filter_slot(&key.addr);
        let users = self.users.entry(slot).or_insert(0);
        *users += 1;
        if *users == 1 {
            self.write(slot, true)?;
        }
        Ok(())
    }

    fn remove(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        if !self.keys.remove(key) {
            return Ok(());
        }
        let slot = filter_slot(&key.addr);
        let Some(users) = self.users.get_mut(&slot) else {
            return Ok(());
        };
        *users -= 1;
        if *users == 0 {
            self.users.remove(&slot);
            self.write(slot, false)?;
        }
        Ok(())
    }

    /// Writes the word holding `slot`. Other bits of the word are unchanged,
    /// so even a torn write never clears another VIP's bit.
    fn write(&mut self, slot: u16, on: bool) -> Result<(), DataplaneError> {
        let (index, bit) = (usize::from(slot >> 6), 1u64 << (slot & 63));
        if on {
            self.words[index] |= bit;
        } else {
            self.words[index] &= !bit;
        }
        self.map
            .set(index as u32, self.words[index], 0)
            .map_err(|source| DataplaneError::Map {
                map: FILTER_MAP,
                source,
            })
    }
}

/// aya reports a missing key as KeyNotFound on lookup but as a raw ENOENT
/// from bpf_map_delete_elem.
fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DataplaneError::Missing(name))?;
    T::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
}

/// Takes `id` from `program` and pins it at `path`; the fd is kept.
fn pin_link(program: &mut Xdp, id: XdpLinkId, path: &Path) -> Result<FdLink, String> {
    let link = program.take_link(id).map_err(|e| e.to_string())?;
    let fd = FdLink::try_from(link).map_err(|e| e.to_string())?;
    let _ = fs::remove_file(path);
    let pinned = fd.pin(path).map_err(|e| e.to_string())?;
    Ok(FdLink::from(pinned))
}

/// CLOCK_BOOTTIME in nanoseconds: the clock `bpf_ktime_get_boot_ns` reads,
/// in which VIP expiries are written. Unlike CLOCK_MONOTONIC it counts time
/// suspended, so an entry whose owner slept past its expiry is dead on
/// resume, and a renewal sent before the sleep extends nothing after it.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a valid timespec; CLOCK_BOOTTIME exists
    // on every kernel that runs the program (5.8+).
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `BPF_MAP_UPDATE_BATCH` on `map` (aya has no batch operations): the
/// kernel reads `keys` and `values` as arrays of the map's key and value
/// size, which are these types'.
fn update_batch(
    map: &HashMap<MapData, VipKey, VipEntry>,
    keys: &[VipKey],
    values: &[VipEntry],
) -> std::io::Result<()> {
    use aya::maps::IterableMap as _;
    use std::os::fd::{AsFd as _, AsRawFd as _};
    /// The batch member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let count = u32::try_from(keys.len().min(values.len()))
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: map.map().fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` points at `count` keys and values that outlive the
    // call; the kernel writes only `attr.count` back.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
