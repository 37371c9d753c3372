//! Process metrics read from `/proc` at scrape time (Linux only; elsewhere, none are exported).

/// The kernel reports `/proc` CPU times and start times in `USER_HZ` ticks, which Linux fixes
/// at 100 for user space whatever the kernel's internal tick rate.
const USER_HZ: f64 = 100.0;

/// What `/proc/self` tells about this process now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Process {
    /// User plus system CPU time, in seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub(crate) resident_bytes: u64,
    /// File descriptors open now.
    pub(crate) open_fds: u64,
    /// The soft open-files limit (`None` when unlimited).
    pub(crate) max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub(crate) start_time_seconds: f64,
}

impl Process {
    /// Reads `/proc/self`; `None` where `/proc` is missing or unreadable.
    pub(crate) fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let system = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        parse(&stat, &status, &limits, &system, open_fds)
    }
}

/// The fields of the four files, apart from reading them, so the parsing is tested on text.
fn parse(stat: &str, status: &str, limits: &str, system: &str, open_fds: u64) -> Option<Process> {
    // The command name (field 2) is in parentheses and may hold spaces and ')': the fields
    // are counted from the last ')'. After it come field 3 (state) onwards.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
    let resident_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())?;
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok());
    let boot_time =
        system.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok())?;
    Some(Process {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        resident_bytes: resident_kib * 1024,
        open_fds,
        max_fds,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_files() {
        // A command name with a space and a ')' inside, as a process may rename itself.
        let stat = "4242 (thr ong) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1234 \
                    1000 200 18446744073709551615";
        let status = "Name:\tthrong\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
        let p = parse(stat, status, limits, system, 7).expect("parsed");
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.resident_bytes, 2048 * 1024);
        assert_eq!((p.open_fds, p.max_fds), (7, Some(1024)));
        assert_eq!(p.start_time_seconds, 1_700_000_012.34);
        let unlimited = limits.replace("1024                 524288", "unlimited            unlimited");
        assert_eq!(parse(stat, status, &unlimited, system, 7).map(|p| p.max_fds), Some(None));
        assert_eq!(parse("garbage", status, limits, system, 7), None);
    }

    #[test]
    fn reads_this_process() {
        let p = Process::read().expect("/proc is there on Linux");
        assert!(p.resident_bytes > 0 && p.open_fds > 0, "{p:?}");
    }
}
