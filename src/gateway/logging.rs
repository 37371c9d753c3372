//! Logs through `tracing`: human lines or JSON objects on stderr, with a filter SIGHUP can
//! change. The engine logs through the `log` crate; those records are bridged in.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use super::config::LogFormat;

/// Changes the log filter of the running process.
pub(crate) struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    pub(crate) fn set_level(&self, filter: &str) -> Result<(), String> {
        let filter = parse(filter)?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("log_level {filter:?}: {e}"))
}

/// Checks a log filter without installing it, so a bad one is a configuration error.
pub(crate) fn check_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter).map(drop).map_err(|e| format!("{filter:?} is not a log filter: {e}"))
}

/// Installs the global subscriber. Fails on a bad filter.
pub(crate) fn init(format: LogFormat, filter: &str) -> Result<LogControl, String> {
    let (filter, handle) = reload::Layer::new(parse(filter)?);
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Human => {
            fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).boxed()
        }
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(output).try_init().map_err(|e| e.to_string())?;
    Ok(LogControl { handle })
}
