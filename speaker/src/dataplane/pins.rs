//! What an agent leaves in its bpffs folder, and what it finds there: the
//! map pins, one link pin per interface it is attached to (`LINK_<ifindex>`,
//! so the program stays attached after the process ends), and `VERSION`,
//! written only by an agent stopping for a restart, which names the map
//! layout and the stopping instance. An exclusive flock on the folder,
//! held for the process's life, tells a successor its predecessor has
//! ended, and refuses a second agent on the host.

use std::{
    fs, io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, MapData, MapInfo};
use speaker_common::maps::{LAYOUT_VERSION, MAP_LAYOUT, PINNED_MAPS, VIPS_MAP, VipEntry, VipKey};
use tracing::{info, warn};

use super::DataplaneError;

/// The symlink an agent stopping for a restart leaves (bpffs holds no
/// regular files); its target says what it left.
pub const VERSION_PIN: &str = "VERSION";
const LINK_PREFIX: &str = "LINK_";

/// The layout this binary's program uses, as written in `VERSION`.
pub fn layout() -> String {
    let maps: Vec<String> = MAP_LAYOUT
        .iter()
        .map(|(name, key, value, max)| format!("{name}:{key}/{value}/{max}"))
        .collect();
    format!("layout-{LAYOUT_VERSION} {}", maps.join(" "))
}

/// This host's agent lock: the folder, locked (flock) for the life of the
/// process. The kernel drops it however the process ends, SIGKILL included;
/// a live or frozen agent keeps it.
pub struct PinLock {
    dir: PathBuf,
    _file: fs::File,
}

/// What the agent before us on this host left for us: its instance (its
/// node lease's), when it stopped for a restart and its maps are of our
/// layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predecessor {
    pub instance: String,
}

impl PinLock {
    /// Makes `dir` on a bpffs and locks it; [`DataplaneError::Busy`] while
    /// another agent holds it.
    pub fn take(dir: &Path) -> Result<Self, DataplaneError> {
        prepare_bpffs_dir(dir)?;
        let file = fs::File::open(dir).map_err(|source| DataplaneError::Bpffs {
            path: dir.to_path_buf(),
            what: "cannot open",
            source,
        })?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(DataplaneError::Busy {
                    path: dir.to_path_buf(),
                });
            }
            return Err(DataplaneError::Bpffs {
                path: dir.to_path_buf(),
                what: "cannot lock",
                source,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The instance of the agent that stopped for a restart here, whatever
    /// it left: it has ended (we hold the lock), so its node lease may be
    /// taken at once.
    pub fn predecessor_instance(&self) -> Option<String> {
        let target = fs::read_link(self.dir.join(VERSION_PIN)).ok()?;
        let target = target.to_string_lossy();
        let (_, instance) = target.rsplit_once(" instance=")?;
        Some(instance.to_string())
    }

    /// The predecessor whose data plane we can adopt, or why there is none
    /// (`None`: nothing was left for a restart).
    pub fn predecessor(&self) -> Result<Predecessor, Option<String>> {
        let target = fs::read_link(self.dir.join(VERSION_PIN)).map_err(|_| None)?;
        let target = target.to_string_lossy();
        let (left, instance) = target
            .rsplit_once(" instance=")
            .ok_or_else(|| Some(format!("unreadable {VERSION_PIN}: {target:?}")))?;
        if left != layout() {
            return Err(Some(format!(
                "map layout {left:?}, this binary's is {:?}",
                layout()
            )));
        }
        for (name, key, value, max) in MAP_LAYOUT {
            let info = MapInfo::from_pin(self.dir.join(name))
                .map_err(|e| Some(format!("map {name}: {e}")))?;
            if (info.key_size(), info.value_size(), info.max_entries()) != (key, value, max) {
                return Err(Some(format!("map {name} is not of this binary's layout")));
            }
        }
        Ok(Predecessor {
            instance: instance.to_string(),
        })
    }

    /// Removes what an earlier run left that will not be adopted: its
    /// program detached, its entries gone. Before the node lease is taken,
    /// since followers then wait only a lease duration.
    pub fn clear(&self) -> Result<(), DataplaneError> {
        Pins::clear(&self.dir)
    }

    /// Shortens every live entry of the pinned VIP map to expire by
    /// `until` at the latest (expired ones stay expired); how many changed.
    pub fn clamp(&self, now: u64, until: u64) -> Result<usize, DataplaneError> {
        let map_err = |source| DataplaneError::Map {
            map: VIPS_MAP,
            source,
        };
        let data = MapData::from_pin(self.dir.join(VIPS_MAP)).map_err(map_err)?;
        let map = aya::maps::Map::from_map_data(data).map_err(map_err)?;
        let mut vips: HashMap<MapData, VipKey, VipEntry> =
            HashMap::try_from(map).map_err(map_err)?;
        let entries: Vec<(VipKey, VipEntry)> =
            vips.iter().collect::<Result<_, _>>().map_err(map_err)?;
        let mut changed = 0;
        for (key, mut entry) in entries {
            let live = entry.is_live(now);
            if live && (entry.expires_ns == VipEntry::NEVER || entry.expires_ns > until) {
                entry.expires_ns = until;
                vips.insert(key, entry, 0).map_err(map_err)?;
                changed += 1;
            }
        }
        Ok(changed)
    }
}

/// The pins of this run; removed on drop unless kept for a successor.
#[derive(Default)]
pub(super) struct Pins {
    dir: Option<PathBuf>,
}

impl Pins {
    pub(super) fn new(dir: Option<&Path>) -> Self {
        Self {
            dir: dir.map(Path::to_path_buf),
        }
    }

    pub(super) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The link pins in `dir`: (ifindex, path).
    pub(super) fn links(dir: &Path) -> Vec<(u32, PathBuf)> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let ifindex = name.strip_prefix(LINK_PREFIX)?.parse().ok()?;
                Some((ifindex, e.path()))
            })
            .collect()
    }

    pub(super) fn link_path(dir: &Path, ifindex: u32) -> PathBuf {
        dir.join(format!("{LINK_PREFIX}{ifindex}"))
    }

    /// Clears what an earlier run left in `dir` (a link pin removed
    /// detaches its program, unless an fd still holds the link).
    pub(super) fn clear(dir: &Path) -> Result<(), DataplaneError> {
        let links = Self::links(dir).into_iter().map(|(_, p)| p);
        let maps = PINNED_MAPS.iter().map(|n| dir.join(n));
        for path in maps.chain(links).chain([dir.join(VERSION_PIN)]) {
            match fs::remove_file(&path) {
                Ok(()) => info!(path = %path.display(), "removed a pin left by an earlier run"),
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
        Ok(())
    }

    /// Leaves the pins for a successor, with `VERSION` naming `instance`.
    pub(super) fn keep(&mut self, instance: &str) -> Result<(), DataplaneError> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        // bpffs refuses names with a dot.
        let (tmp, path) = (dir.join("VERSION_NEW"), dir.join(VERSION_PIN));
        let target = format!("{} instance={instance}", layout());
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| DataplaneError::Bpffs {
                path,
                what: "cannot write",
                source,
            })
    }

    pub(super) fn remove(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        let links = Self::links(&dir).into_iter().map(|(_, p)| p);
        let maps = PINNED_MAPS.iter().map(|n| dir.join(n));
        for path in maps.chain(links).chain([dir.join(VERSION_PIN)]) {
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
pub(super) fn prepare_bpffs_dir(dir: &Path) -> Result<(), DataplaneError> {
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
