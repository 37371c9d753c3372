//! The modes, one module each. A mode runs to completion and returns an [`Outcome`].

pub(crate) mod connect;
pub(crate) mod echo;
pub(crate) mod storm;

use serde::Serialize;

/// What a mode hands back to `main`.
pub(crate) struct Outcome {
    /// Human-readable lines for stdout.
    pub(crate) summary: Vec<String>,
    /// The report as one line of JSON.
    pub(crate) json: String,
    /// Whether the run met its checks (exit status 0).
    pub(crate) ok: bool,
}

impl Outcome {
    pub(crate) fn new(summary: Vec<String>, report: &impl Serialize, ok: bool) -> std::io::Result<Self> {
        let json = serde_json::to_string(report).map_err(std::io::Error::other)?;
        Ok(Outcome { summary, json, ok })
    }
}
