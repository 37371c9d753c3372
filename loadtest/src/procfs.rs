//! What /proc says about a process (CPU time, memory, mappings) and about kernel socket memory.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::time::Instant;

use nix::unistd::{sysconf, SysconfVar};
use serde::{Deserialize, Serialize};

/// Clock ticks per second of the times in /proc/PID/stat.
fn clock_ticks() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as f64,
        _ => 100.0,
    }
}

/// The page size, for /proc/net/sockstat's `mem`.
pub(crate) fn page_size() -> u64 {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => 4096,
    }
}

thread_local! {
    /// Whether "this process" means this thread (a loop of `--threads`).
    static CLIENT_IS_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// From now on, the client's CPU time sampled on this thread is this thread's alone
/// (`/proc/thread-self/stat`): each loop of `--threads` reports its own, and the merged report
/// adds them up.
pub(crate) fn client_is_this_thread() {
    CLIENT_IS_THREAD.with(|own| own.set(true));
}

/// A process's user + system CPU time at an instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuSample {
    at: Instant,
    cpu_s: f64,
}

impl CpuSample {
    /// Samples `pid` (`None`: this process, or only this thread after [`client_is_this_thread`]).
    pub(crate) fn take(pid: Option<u32>) -> io::Result<Self> {
        let own = if CLIENT_IS_THREAD.with(std::cell::Cell::get) {
            "/proc/thread-self/stat"
        } else {
            "/proc/self/stat"
        };
        let path = pid.map_or_else(|| own.to_owned(), |pid| format!("/proc/{pid}/stat"));
        let stat = fs::read_to_string(path)?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        // utime and stime are fields 14 and 15 of the whole line; field 3 is index 0 here.
        let (Some(utime), Some(stime)) = (field(11), field(12)) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat format"));
        };
        Ok(CpuSample { at: Instant::now(), cpu_s: (utime + stime) as f64 / clock_ticks() })
    }

    /// The summed CPU time of `pids` (`None` when the list is empty).
    pub(crate) fn take_all(pids: &[u32]) -> io::Result<Option<Self>> {
        let mut total: Option<CpuSample> = None;
        for &pid in pids {
            let sample = CpuSample::take(Some(pid))?;
            total = Some(match total {
                Some(t) => CpuSample { at: sample.at, cpu_s: t.cpu_s + sample.cpu_s },
                None => sample,
            });
        }
        Ok(total)
    }

    /// CPU seconds used and wall seconds passed since `earlier`.
    pub(crate) fn since(&self, earlier: &CpuSample) -> (f64, f64) {
        (self.cpu_s - earlier.cpu_s, self.at.duration_since(earlier.at).as_secs_f64())
    }
}

/// CPU use over a window.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct CpuUse {
    /// CPU seconds (user + system, all threads).
    pub(crate) cpu_s: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub(crate) utilisation: f64,
    /// CPU microseconds per operation (message, cycle).
    pub(crate) us_per_op: f64,
}

impl CpuUse {
    /// The use between two samples, divided over `ops` operations.
    pub(crate) fn between(start: &CpuSample, end: &CpuSample, ops: u64) -> Self {
        let (cpu_s, wall_s) = end.since(start);
        CpuUse {
            cpu_s: crate::stats::round3(cpu_s),
            utilisation: crate::stats::round3(if wall_s > 0.0 { cpu_s / wall_s } else { 0.0 }),
            us_per_op: crate::stats::round3(if ops > 0 { cpu_s * 1e6 / ops as f64 } else { 0.0 }),
        }
    }

    /// Two processes' use over the same window (cores add up); `ops` is the merged total.
    pub(crate) fn merge(&mut self, other: &CpuUse, ops: u64) {
        self.cpu_s = crate::stats::round3(self.cpu_s + other.cpu_s);
        self.utilisation = crate::stats::round3(self.utilisation + other.utilisation);
        self.us_per_op = crate::stats::round3(if ops > 0 { self.cpu_s * 1e6 / ops as f64 } else { 0.0 });
    }
}

/// Busy CPU seconds of the whole machine, all cores (/proc/stat: everything but idle and iowait).
fn machine_busy_s() -> io::Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).unwrap_or_default();
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 =
        ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Ok(busy as f64 / clock_ticks())
}

/// CPU times of the client, the server (if known) and the whole machine at one instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    client: CpuSample,
    server: Option<CpuSample>,
    machine_s: f64,
}

impl Snapshot {
    /// Samples this process, the server processes `server_pids` (summed) and the machine.
    pub(crate) fn take(server_pids: &[u32]) -> io::Result<Self> {
        Ok(Snapshot {
            client: CpuSample::take(None)?,
            server: CpuSample::take_all(server_pids)?,
            machine_s: machine_busy_s()?,
        })
    }

    /// Wall seconds since `earlier`.
    pub(crate) fn wall_s(&self, earlier: &Snapshot) -> f64 {
        self.client.since(&earlier.client).1
    }

    /// The server's CPU use between `earlier` and this snapshot over `ops` operations.
    pub(crate) fn server_use_since(&self, earlier: &Snapshot, ops: u64) -> Option<CpuUse> {
        match (earlier.server, self.server) {
            (Some(a), Some(b)) => Some(CpuUse::between(&a, &b, ops)),
            _ => None,
        }
    }

    /// CPU use between `earlier` and this snapshot, divided over `ops` operations.
    pub(crate) fn usage_since(&self, earlier: &Snapshot, ops: u64) -> Usage {
        let client = CpuUse::between(&earlier.client, &self.client, ops);
        let server = match (earlier.server, self.server) {
            (Some(a), Some(b)) => Some(CpuUse::between(&a, &b, ops)),
            _ => None,
        };
        let wall = self.wall_s(earlier);
        let machine = if wall > 0.0 { (self.machine_s - earlier.machine_s) / wall } else { 0.0 };
        let ours = client.utilisation + server.map_or(0.0, |s| s.utilisation);
        Usage {
            client,
            server,
            machine_cores: crate::stats::round3(machine),
            other_cores: crate::stats::round3((machine - ours).max(0.0)),
        }
    }
}

/// CPU use over a measured window.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Usage {
    /// This process.
    pub(crate) client: CpuUse,
    /// The server, with `--server-pid`.
    pub(crate) server: Option<CpuUse>,
    /// Busy cores of the whole machine.
    pub(crate) machine_cores: f64,
    /// Busy cores not accounted to the client or the server: other load that competed with the
    /// measurement (a busy machine makes rates and latencies pessimistic; CPU per op less so).
    pub(crate) other_cores: f64,
}

impl Usage {
    /// Adds another client process's use of the same window; the server's use is set by the
    /// parent (`server`), which measured it once for all.
    pub(crate) fn merge(&mut self, other: &Usage, ops: u64) {
        self.client.merge(&other.client, ops);
        self.machine_cores = self.machine_cores.max(other.machine_cores);
        self.refresh_other();
    }

    /// Sets the server's use (measured by the parent of a `--procs` run).
    pub(crate) fn set_server(&mut self, server: Option<CpuUse>) {
        self.server = server;
        self.refresh_other();
    }

    fn refresh_other(&mut self) {
        let ours = self.client.utilisation + self.server.map_or(0.0, |s| s.utilisation);
        self.other_cores = crate::stats::round3((self.machine_cores - ours).max(0.0));
    }

    /// `client cpu … server cpu … other load …` for a summary line; `unit` names the operation.
    pub(crate) fn line(&self, unit: &str) -> String {
        let mut line =
            format!("client {:.2} cores ({:.2} µs/{unit})", self.client.utilisation, self.client.us_per_op);
        if let Some(s) = &self.server {
            line.push_str(&format!(", server {:.2} cores ({:.2} µs/{unit})", s.utilisation, s.us_per_op));
        }
        line.push_str(&format!(
            ", machine {:.2} cores, other processes {:.2}",
            self.machine_cores, self.other_cores
        ));
        line
    }
}

/// A process's memory, in KiB.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Mem {
    /// Resident set (VmRSS).
    pub(crate) rss_kib: u64,
    /// Anonymous resident memory (RssAnon): the heap and stacks.
    pub(crate) rss_anon_kib: u64,
    /// Proportional set size (smaps_rollup `Pss`).
    pub(crate) pss_kib: u64,
    /// Peak resident set (VmHWM).
    pub(crate) hwm_kib: u64,
}

impl Mem {
    pub(crate) fn take(pid: u32) -> io::Result<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        Ok(Mem {
            rss_kib: kib_field(&status, "VmRSS:"),
            rss_anon_kib: kib_field(&status, "RssAnon:"),
            pss_kib: kib_field(&rollup, "Pss:"),
            hwm_kib: kib_field(&status, "VmHWM:"),
        })
    }

    /// The sum over `pids` (several server processes sharing a port).
    pub(crate) fn take_all(pids: &[u32]) -> io::Result<Self> {
        let mut total = Mem::default();
        for &pid in pids {
            total.add(&Mem::take(pid)?);
        }
        Ok(total)
    }

    pub(crate) fn add(&mut self, other: &Mem) {
        self.rss_kib += other.rss_kib;
        self.rss_anon_kib += other.rss_anon_kib;
        self.pss_kib += other.pss_kib;
        self.hwm_kib += other.hwm_kib;
    }
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The TCP line of /proc/net/sockstat (system-wide: both ends of loopback connections).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SockStat {
    pub(crate) inuse: u64,
    pub(crate) orphan: u64,
    pub(crate) tw: u64,
    pub(crate) alloc: u64,
    /// Pages of socket buffer memory charged to TCP.
    pub(crate) mem_pages: u64,
}

impl SockStat {
    pub(crate) fn take() -> io::Result<Self> {
        let text = fs::read_to_string("/proc/net/sockstat")?;
        let line = text.lines().find_map(|l| l.strip_prefix("TCP:")).unwrap_or_default();
        let mut stat = SockStat::default();
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.chunks_exact(2) {
            let value = pair[1].parse().unwrap_or(0);
            match pair[0] {
                "inuse" => stat.inuse = value,
                "orphan" => stat.orphan = value,
                "tw" => stat.tw = value,
                "alloc" => stat.alloc = value,
                "mem" => stat.mem_pages = value,
                _ => {}
            }
        }
        Ok(stat)
    }
}

/// Kernel slab memory in KiB (/proc/meminfo `Slab:`): socket, inode, file and epoll structures
/// live there. System-wide.
pub(crate) fn slab_kib() -> io::Result<u64> {
    Ok(kib_field(&fs::read_to_string("/proc/meminfo")?, "Slab:"))
}

/// One mapping of /proc/PID/smaps.
#[derive(Clone, Debug)]
pub(crate) struct Mapping {
    start: u64,
    size_kib: u64,
    name: String,
    rss_kib: u64,
}

/// Reads the mappings of `pid`.
pub(crate) fn smaps(pid: u32) -> io::Result<Vec<Mapping>> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) {
                let name = words.nth(4).unwrap_or("").to_owned();
                maps.push(Mapping { start, size_kib: (end - start) / 1024, name, rss_kib: 0 });
                continue;
            }
        }
        if let (Some(rest), Some(map)) = (line.strip_prefix("Rss:"), maps.last_mut()) {
            map.rss_kib = rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    Ok(maps)
}

/// The KiB resident in `pid`'s io_uring ring mappings (`anon_inode:[io_uring]`; 0 without a
/// ring).
pub(crate) fn ring_kib(pid: u32) -> io::Result<u64> {
    Ok(smaps(pid)?.iter().filter(|m| m.name == "anon_inode:[io_uring]").map(|m| m.rss_kib).sum())
}

/// Whether a TCP socket listens on `port` (any address, IPv4 or IPv6), from /proc/net/tcp and
/// tcp6: a server can be seen to listen without being sent a connection.
pub(crate) fn listening(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|path| {
        let text = fs::read_to_string(path).unwrap_or_default();
        // `sl local_address rem_address st …`; st 0A is LISTEN.
        text.lines().skip(1).any(|line| {
            let mut words = line.split_whitespace().skip(1);
            let local = words.next().unwrap_or_default();
            let state = words.nth(1).unwrap_or_default();
            local.ends_with(&wanted) && state == "0A"
        })
    })
}

/// How much one mapping grew between two snapshots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Growth {
    /// The file or `[heap]`, `[stack]`; `[anon]` with its address for anonymous memory (malloc
    /// arenas of the threads, large allocations).
    pub(crate) mapping: String,
    pub(crate) size_kib: u64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    pub(crate) growth_kib: i64,
}

/// The `top` mappings by resident growth (mappings keyed by start address).
pub(crate) fn growth(before: &[Mapping], after: &[Mapping], top: usize) -> Vec<Growth> {
    let old: HashMap<u64, &Mapping> = before.iter().map(|m| (m.start, m)).collect();
    let mut grown: Vec<Growth> = after
        .iter()
        .map(|m| {
            let rss_before_kib = old.get(&m.start).map_or(0, |b| b.rss_kib);
            let mapping = if m.name.is_empty() { format!("[anon] {:#x}", m.start) } else { m.name.clone() };
            Growth {
                mapping,
                size_kib: m.size_kib,
                rss_before_kib,
                rss_after_kib: m.rss_kib,
                growth_kib: m.rss_kib as i64 - rss_before_kib as i64,
            }
        })
        .filter(|g| g.growth_kib != 0)
        .collect();
    grown.sort_by_key(|g| std::cmp::Reverse(g.growth_kib));
    grown.truncate(top);
    grown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_seen_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening(port));
        drop(listener);
        assert!(!listening(port));
    }

    #[test]
    fn reads_this_process() {
        let a = CpuSample::take(None).unwrap();
        let b = CpuSample::take(None).unwrap();
        assert!(b.since(&a).0 >= 0.0);
        let pid = std::process::id();
        let mem = Mem::take(pid).unwrap();
        assert!(mem.rss_kib > 0 && mem.pss_kib > 0, "{mem:?}");
        let maps = smaps(pid).unwrap();
        assert!(maps.iter().any(|m| m.rss_kib > 0));
        assert!(growth(&maps, &maps, 5).is_empty());
        SockStat::take().unwrap();
        assert!(slab_kib().unwrap() > 0);
    }
}
