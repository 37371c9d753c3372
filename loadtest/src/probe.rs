//! `connect`'s memory measurement: the server processes' memory and the kernel's socket memory
//! before the connections and while they are held. Taken by the process that runs `connect`, or
//! by the parent of a `--procs` run (once for all its children).

use std::io;

use serde::{Deserialize, Serialize};

use crate::procfs::{self, Growth, Mapping, Mem, SockStat};
use crate::stats::round3;

/// The "before" readings.
pub(crate) struct MemProbe {
    pids: Vec<u32>,
    mem: Option<Mem>,
    maps: Vec<Vec<Mapping>>,
    sockstat: SockStat,
    slab_kib: u64,
}

/// The server's memory, summed over its processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ServerMem {
    pids: Vec<u32>,
    pub(crate) before: Mem,
    pub(crate) after: Mem,
    pub(crate) rss_bytes_per_conn: f64,
    pub(crate) pss_bytes_per_conn: f64,
    pub(crate) anon_bytes_per_conn: f64,
    /// The mappings whose resident size grew most (`PID:` before the name with several pids).
    pub(crate) top_growth: Vec<Growth>,
}

/// Memory before and while holding the connections.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct MemReport {
    /// Connections open when the memory was read.
    pub(crate) open_at_measure: u64,
    pub(crate) server: Option<ServerMem>,
    pub(crate) sockstat_before: SockStat,
    pub(crate) sockstat_after: SockStat,
    /// Growth of /proc/net/sockstat `TCP mem` per open connection, in bytes. System-wide: on
    /// loopback it covers both ends of each connection.
    pub(crate) kernel_tcp_bytes_per_conn: f64,
    /// Growth of /proc/meminfo `Slab` per open connection, in bytes: the kernel's socket, file
    /// and epoll structures of both ends (system-wide, so other activity adds noise).
    pub(crate) kernel_slab_bytes_per_conn: f64,
    pub(crate) slab_before_kib: u64,
    pub(crate) slab_after_kib: u64,
}

impl MemProbe {
    pub(crate) fn before(pids: &[u32]) -> io::Result<Self> {
        Ok(MemProbe {
            pids: pids.to_vec(),
            mem: if pids.is_empty() { None } else { Some(Mem::take_all(pids)?) },
            maps: pids.iter().map(|&pid| procfs::smaps(pid)).collect::<io::Result<_>>()?,
            sockstat: SockStat::take()?,
            slab_kib: procfs::slab_kib()?,
        })
    }

    /// Reads again with `open` connections open.
    pub(crate) fn after(&self, open: u64, top: usize) -> io::Result<MemReport> {
        let per_conn =
            |before: u64, after: u64| round3((after as f64 - before as f64) * 1024.0 / open.max(1) as f64);
        let server = match self.mem {
            Some(before) => {
                let after = Mem::take_all(&self.pids)?;
                let mut top_growth = Vec::new();
                for (&pid, maps_before) in self.pids.iter().zip(&self.maps) {
                    let mut grown = procfs::growth(maps_before, &procfs::smaps(pid)?, top);
                    if self.pids.len() > 1 {
                        grown.iter_mut().for_each(|g| g.mapping = format!("{pid}:{}", g.mapping));
                    }
                    top_growth.extend(grown);
                }
                top_growth.sort_by_key(|g| std::cmp::Reverse(g.growth_kib));
                top_growth.truncate(top);
                Some(ServerMem {
                    pids: self.pids.clone(),
                    before,
                    after,
                    rss_bytes_per_conn: per_conn(before.rss_kib, after.rss_kib),
                    pss_bytes_per_conn: per_conn(before.pss_kib, after.pss_kib),
                    anon_bytes_per_conn: per_conn(before.rss_anon_kib, after.rss_anon_kib),
                    top_growth,
                })
            }
            None => None,
        };
        let sockstat_after = SockStat::take()?;
        let slab_after_kib = procfs::slab_kib()?;
        let page = procfs::page_size() as f64;
        Ok(MemReport {
            open_at_measure: open,
            server,
            sockstat_before: self.sockstat,
            sockstat_after,
            kernel_tcp_bytes_per_conn: round3(
                (sockstat_after.mem_pages as f64 - self.sockstat.mem_pages as f64) * page
                    / open.max(1) as f64,
            ),
            kernel_slab_bytes_per_conn: per_conn(self.slab_kib, slab_after_kib),
            slab_before_kib: self.slab_kib,
            slab_after_kib,
        })
    }
}

impl MemReport {
    /// The human table's rows.
    pub(crate) fn rows(&self, rows: &mut Vec<(String, String)>) {
        if let Some(s) = &self.server {
            rows.push((
                format!("server {:?}", s.pids),
                format!(
                    "RSS {} -> {} KiB ({:.0} B/conn), PSS {} -> {} KiB ({:.0} B/conn), anon {:.0} B/conn",
                    s.before.rss_kib,
                    s.after.rss_kib,
                    s.rss_bytes_per_conn,
                    s.before.pss_kib,
                    s.after.pss_kib,
                    s.pss_bytes_per_conn,
                    s.anon_bytes_per_conn
                ),
            ));
            for g in &s.top_growth {
                rows.push((
                    "  grew".into(),
                    format!(
                        "{:+} KiB: {} ({} -> {} KiB resident of {} KiB)",
                        g.growth_kib, g.mapping, g.rss_before_kib, g.rss_after_kib, g.size_kib
                    ),
                ));
            }
        }
        let (a, b) = (&self.sockstat_before, &self.sockstat_after);
        rows.push((
            "kernel".into(),
            format!(
                "TCP mem {} -> {} pages ({:.0} B/conn), slab {} -> {} KiB ({:.0} B/conn) (both ends), inuse {} -> {}, tw {}",
                a.mem_pages,
                b.mem_pages,
                self.kernel_tcp_bytes_per_conn,
                self.slab_before_kib,
                self.slab_after_kib,
                self.kernel_slab_bytes_per_conn,
                a.inuse,
                b.inuse,
                b.tw
            ),
        ));
    }
}
