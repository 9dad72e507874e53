//! Where the storm's threads run, and the CPU time the node's tasks use.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// Real-time (SCHED_FIFO) priorities. Everything of the benchmark that
/// matters runs above ordinary tasks, so that other load on a shared machine
/// (a build) cannot delay it: a woken thread behind an ordinary task would
/// wait for that task's time slice, long enough for veth's 256-frame ring to
/// overflow. The receive threads (threaded NAPI) run above the tasks, as a
/// NIC's interrupt and softirq preempt them.
pub const RECEIVE: i32 = 50;
pub const TASK: i32 = 10;

fn set_affinity(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: all-zero is an empty CPU set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("no CPU {cpu}");
    }
    // SAFETY: cpu is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sched_setaffinity({tid}, CPU {cpu})"));
    }
    Ok(())
}

fn set_fifo(tid: i32, priority: i32) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler on one thread with a valid parameter.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sched_setscheduler({tid}, SCHED_FIFO {priority})"));
    }
    Ok(())
}

/// Runs thread `tid` (0: the calling one) on `cpu` only, at real-time
/// `priority`.
pub fn place(tid: i32, cpu: usize, priority: i32) -> Result<()> {
    set_affinity(tid, cpu)?;
    set_fifo(tid, priority)
}

/// [`place`] for every thread of process `pid` at [`TASK`] (threads it
/// starts later inherit both).
pub fn place_process(pid: i32, cpu: usize) -> Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("no process {pid}"))?;
    for t in tasks.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
            place(tid, cpu, TASK)?;
        }
    }
    Ok(())
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The calling thread's CPU affinity, given back on drop: the parts after
/// this one run on the same thread.
pub struct Pinned(libc::cpu_set_t);

impl Pinned {
    /// Runs the calling thread (and what it starts) on `cpu` only; it stays
    /// an ordinary task, as do the commands it runs.
    pub fn this_thread(cpu: usize) -> Result<Self> {
        // SAFETY: all-zero is a valid cpu_set_t, filled in by the call.
        let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: cpus is writable for its size.
        if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut cpus) } != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
        }
        set_affinity(0, cpu)?;
        Ok(Self(cpus))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: a cpu_set_t read back from the kernel, for this thread.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// The CPU time of a task, in µs: utime + stime from its `stat` file
/// (/proc/PID/stat: a process's threads, those gone included; a kernel
/// thread; /proc/self/task/TID/stat: one thread). The kernel derives their
/// sum from the scheduler's exact runtime; only the unit is a clock tick.
/// Softirq work the kernel does while the task runs is charged to it.
pub fn task_us(stat: &Path) -> Result<f64> {
    let s =
        std::fs::read_to_string(stat).with_context(|| format!("cannot read {}", stat.display()))?;
    // Fields after the command name (which may hold spaces), from field 3:
    // utime is field 14, stime 15.
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected {}", stat.display()))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("unexpected {}", stat.display()))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 * 1e6 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Per-CPU busy and total time from /proc/stat, in clock ticks.
#[derive(Clone, Copy, Default)]
pub struct CpuTime {
    busy: u64,
    total: u64,
}

pub fn cpu_times() -> Result<Vec<CpuTime>> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let mut out = Vec::new();
    for l in stat.lines() {
        let mut f = l.split_whitespace();
        let Some(cpu) = f.next().and_then(|c| c.strip_prefix("cpu")) else {
            continue;
        };
        if cpu.is_empty() {
            continue; // the sum line
        }
        // user nice system idle iowait irq softirq steal: busy is all but
        // idle, iowait and steal (the hypervisor's, not ours).
        let v: Vec<u64> = f.take(8).map(|x| x.parse().unwrap_or(0)).collect();
        if v.len() < 8 {
            bail!("unexpected /proc/stat line: {l}");
        }
        out.push(CpuTime {
            busy: v[0] + v[1] + v[2] + v[5] + v[6],
            total: v.iter().sum(),
        });
    }
    Ok(out)
}

/// The busy share of `cpu` between two readings.
pub fn busy_share(a: &[CpuTime], b: &[CpuTime], cpu: usize) -> f64 {
    let (Some(a), Some(b)) = (a.get(cpu), b.get(cpu)) else {
        return f64::NAN;
    };
    let total = b.total.saturating_sub(a.total) as f64;
    if total > 0.0 {
        b.busy.saturating_sub(a.busy) as f64 / total
    } else {
        0.0
    }
}
