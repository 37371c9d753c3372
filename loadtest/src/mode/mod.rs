//! The modes, one module each. A mode runs to completion (or until stopped) and returns its
//! report; reports of the processes of a `--procs` run merge into one.

pub(crate) mod connect;
pub(crate) mod echo;
pub(crate) mod fanout;
pub(crate) mod scenario;
pub(crate) mod storm;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ctl::Sample;
use crate::stats::Latency;

/// What every report has besides its mode's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RunInfo {
    /// Stopped early (Ctrl-C, SIGTERM): the figures cover the part that ran.
    pub(crate) interrupted: bool,
    /// Processes that ran the connections (1 without `--procs`).
    pub(crate) procs: usize,
    /// One sample per second: connections open and operations per second.
    pub(crate) series: Vec<Sample>,
    /// The client loop's backend (`epoll`, `io_uring`; `--backend`).
    #[serde(default)]
    pub(crate) backend: String,
}

impl RunInfo {
    /// A single process's run on `backend`.
    pub(crate) fn new(interrupted: bool, backend: crate::driver::Backend) -> Self {
        RunInfo { interrupted, procs: 1, series: Vec::new(), backend: backend.name().into() }
    }

    pub(crate) fn merge(&mut self, other: &RunInfo) {
        self.interrupted |= other.interrupted;
        self.procs += other.procs;
        if self.backend.is_empty() {
            self.backend.clone_from(&other.backend);
        }
    }
}

/// A mode's report.
pub(crate) trait Report: Serialize + DeserializeOwned {
    /// Adds the report of another process of the same run.
    fn merge(&mut self, other: Self);
    /// The final human table: (what, figures).
    fn rows(&self) -> Vec<(String, String)>;
    /// Whether the run met its checks (exit status 0).
    fn ok(&self) -> bool;
    /// What `--threshold` compares: the mode's main latency (echo: the round trip, from the
    /// schedule in open loop; connect and storm's dial: connect start to 101, storm: the cycle;
    /// fanout: publish to delivery), its failed operations and their rate.
    fn metrics(&self) -> crate::threshold::Metrics;
    /// The latency charted in the HTML report, with its title.
    fn chart(&self) -> (&'static str, &Latency);
    /// What the operations of the time series are (`messages`, `handshakes`…).
    fn ops_name(&self) -> &'static str;
    fn run_info(&mut self) -> &mut RunInfo;
    /// Recomputes `ok` and derived figures after merging or a change by the parent.
    fn finish(&mut self);
    /// Takes what the parent of a `--procs` run measured for all its children.
    fn apply(&mut self, extra: Extra) {
        let _ = extra;
    }
    /// Drops what only the parent of a `--procs` run needs, before the final output.
    fn strip(&mut self) {}
}

/// What the parent of a `--procs` run measures itself, once for all its children.
pub(crate) enum Extra {
    /// `connect`: the server's and the kernel's memory.
    Mem(crate::probe::MemReport),
    /// The measured window, for the server's CPU time.
    Window(crate::procfs::Snapshot, crate::procfs::Snapshot),
    /// `fanout`: what the publisher did.
    Publish(crate::publish::PublishStats),
}

/// Prints the table: the first column padded to the widest entry.
pub(crate) fn print_table(rows: &[(String, String)]) {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("  {key:<width$}  {value}");
    }
}
