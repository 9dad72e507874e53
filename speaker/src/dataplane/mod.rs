//! The kernel side as the agent sees it: loading the XDP object, attaching
//! it, pinning its maps, and reading and writing them.

mod diff;
mod objects;

use std::{
    collections::HashMap as StdHashMap,
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
pub use diff::MapDiff;
pub use objects::SPEAKER_XDP;
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
    // Dropping `ebpf` detaches the program (its links are fd-based).
    ebpf: Ebpf,
    maps: Maps,
    filter: Filter,
    links: StdHashMap<u32, XdpLinkId>,
    pins: Pins,
}

impl Dataplane {
    /// Loads the embedded responder into the kernel (not yet attached) and
    /// pins its maps under `pin_dir` (on a bpffs), replacing what an earlier
    /// run left there, so `bpftool map dump pinned DIR/VIPS` works.
    pub fn load(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Self::load_object(SPEAKER_XDP, Some(pin_dir))
    }

    /// Loads a responder object, pinning its maps when given a folder.
    pub fn load_object(object: &[u8], pin_dir: Option<&Path>) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut ebpf = EbpfLoader::new()
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
        let mut pins = Pins::default();
        if let Some(dir) = pin_dir {
            pins.prepare(dir)?;
        }
        let maps = Maps {
            vips: take_map(&mut ebpf, VIPS_MAP, &mut pins)?,
            counters: take_map(&mut ebpf, COUNTERS_MAP, &mut pins)?,
            conflicts: take_map(&mut ebpf, CONFLICTS_MAP, &mut pins)?,
            stats: take_map(&mut ebpf, VIP_STATS_MAP, &mut pins)?,
        };
        let filter = Filter::new(take_map(&mut ebpf, FILTER_MAP, &mut pins)?);
        Ok(Self {
            ebpf,
            maps,
            filter,
            links: StdHashMap::new(),
            pins,
        })
    }

    /// The loaded program, for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(XDP_PROGRAM)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(|e| DataplaneError::Program(Box::new(e)))
    }

    /// Attaches to `iface`; returns the mode it runs in.
    pub fn attach(
        &mut self,
        iface: &Interface,
        mode: AttachMode,
    ) -> Result<XdpMode, DataplaneError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DataplaneError::Missing("XDP program"))?
            .try_into()
            .map_err(|e| DataplaneError::Program(Box::new(e)))?;
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
        self.links.insert(iface.ifindex, link);
        info!(interface = %iface.name, mode = ?used, "XDP responder attached");
        Ok(used)
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) {
        let Some(program) = self.ebpf.program_mut(XDP_PROGRAM) else {
            return;
        };
        let Ok(program): Result<&mut Xdp, _> = program.try_into() else {
            return;
        };
        for (ifindex, link) in self.links.drain() {
            if let Err(e) = program.detach(link) {
                warn!(ifindex, error = %error_chain(&e), "cannot detach XDP program");
            }
        }
    }

    /// Removes the pins (and their folder, when empty).
    pub fn unpin(&mut self) {
        self.pins.remove();
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

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str, pins: &mut Pins) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DataplaneError::Missing(name))?;
    pins.pin(&map, name)?;
    T::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
}

/// The pinned maps of this run; removed on drop.
#[derive(Default)]
struct Pins {
    dir: Option<PathBuf>,
}

impl Pins {
    /// Makes `dir` on a bpffs and clears what an earlier run left in it.
    fn prepare(&mut self, dir: &Path) -> Result<(), DataplaneError> {
        prepare_bpffs_dir(dir)?;
        for name in PINNED_MAPS {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => info!(path = %path.display(), "replaced a pin left by an earlier run"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DataplaneError::Bpffs {
                        path,
                        what: "cannot remove stale pin",
                        source,
                    });
                }
            }
        }
        self.dir = Some(dir.to_path_buf());
        Ok(())
    }

    fn pin(&self, map: &aya::maps::Map, name: &'static str) -> Result<(), DataplaneError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        map.pin(dir.join(name))
            .map_err(|source| DataplaneError::Pin {
                map: name,
                path: dir.join(name),
                source,
            })
    }

    fn remove(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        for name in PINNED_MAPS {
            let path = dir.join(name);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(path = %path.display(), error = %e, "cannot remove pin");
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        self.remove();
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs on a valid C string into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes `dir` exist on a bpffs. When /sys/fs/bpf itself is not mounted
/// (common on minimal hosts), mounts it there.
fn prepare_bpffs_dir(dir: &Path) -> Result<(), DataplaneError> {
    fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> DataplaneError {
        let path = path.to_path_buf();
        move |source| DataplaneError::Bpffs { path, what, source }
    }
    let root = Path::new("/sys/fs/bpf");
    if dir.parent() == Some(root) && !is_bpffs(root).map_err(io_err(root, "cannot stat"))? {
        info!("mounting bpffs at /sys/fs/bpf");
        mount_bpffs(root).map_err(io_err(root, "cannot mount bpffs"))?;
    }
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(root);
    }
    if !is_bpffs(existing).map_err(io_err(existing, "cannot stat"))? {
        return Err(DataplaneError::NotBpffs {
            path: dir.to_path_buf(),
        });
    }
    fs::create_dir_all(dir).map_err(io_err(dir, "cannot create folder"))?;
    Ok(())
}

fn mount_bpffs(at: &Path) -> io::Result<()> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: mount(2) with valid C strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
