//! Where each option's value came from, so that an error names the place to fix: the file and
//! line, the `THRONG_*` variable, or the flag.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use super::options::{Cli, Options};

/// Where one option's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Not given anywhere: the built-in default.
    Default,
    /// The config file, with the line of the key when the TOML parser reported it.
    File {
        /// The file as named on the command line.
        path: PathBuf,
        /// 1-based line of the value.
        line: Option<usize>,
    },
    /// A `THRONG_*` environment variable.
    Env(String),
    /// A command-line flag (`--name`).
    Flag(String),
    /// A flag or its variable, when the command line was parsed without recording which (a
    /// [`Cli`] built by `clap::Parser::parse` rather than [`Cli::parse_args`]).
    CommandLine {
        /// The flag.
        flag: String,
        /// Its variable.
        env: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File { path, line: Some(line) } => write!(f, "set in {} line {line}", path.display()),
            Source::File { path, line: None } => write!(f, "set in {}", path.display()),
            Source::Env(var) => write!(f, "set by {var}"),
            Source::Flag(flag) => write!(f, "set by {flag}"),
            Source::CommandLine { flag, env } => write!(f, "set by {flag} or {env}"),
        }
    }
}

/// Which command-line options came from a flag and which from a variable, recorded by
/// [`Cli::parse_args`].
#[derive(Clone, Debug, Default)]
pub struct CliSources(HashMap<String, Source>);

/// The flag and variable of option `key`, from the command definition.
fn names(key: &str) -> (String, String) {
    let cmd = Cli::command();
    let arg = cmd.get_arguments().find(|a| a.get_id() == key);
    let flag = arg.and_then(|a| a.get_long()).map_or_else(|| key.replace('_', "-"), str::to_owned);
    let env = arg
        .and_then(|a| a.get_env())
        .map_or_else(|| format!("THRONG_{}", key.to_ascii_uppercase()), |e| e.to_string_lossy().into_owned());
    (format!("--{flag}"), env)
}

impl Cli {
    /// Parses `args` (the program name first) and the environment like `clap::Parser`, and also
    /// records whether each option came from a flag or a `THRONG_*` variable. A bad value in a
    /// variable is reported under the variable's name, not the flag's.
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = Cli::command();
        let matches = match cmd.try_get_matches_from_mut(&args) {
            Ok(m) => m,
            Err(e) => return Err(name_the_variable(e, &args, &mut cmd)),
        };
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let (flag, env) = names(id);
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag(flag),
                Some(ValueSource::EnvVariable) => Source::Env(env),
                _ => continue,
            };
            cli.sources.0.insert(id.to_owned(), source);
        }
        Ok(cli)
    }
}

/// Rewrites clap's "invalid value for '--flag'" as one about the variable when the flag was
/// not on the command line, so the operator looks in the right place.
fn name_the_variable(e: clap::Error, args: &[OsString], cmd: &mut clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return e;
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else { return e };
    let long = shown.trim_start_matches("--").split([' ', '=']).next().unwrap_or_default();
    let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(long)) else { return e };
    let Some(var) = arg.get_env().map(|v| v.to_string_lossy().into_owned()) else { return e };
    let flag = format!("--{long}");
    let on_command_line = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    if on_command_line || std::env::var_os(&var).is_none() {
        return e;
    }
    let value = match (arg.is_hide_env_values_set(), e.get(ContextKind::InvalidValue)) {
        (false, Some(ContextValue::String(v))) => format!(" {v:?}"),
        _ => String::new(),
    };
    let why = match (std::error::Error::source(&e), e.get(ContextKind::ValidValue)) {
        (Some(cause), _) => format!(": {cause}"),
        (None, Some(ContextValue::Strings(valid))) => format!(": expected one of {}", valid.join(", ")),
        _ => String::new(),
    };
    clap::Error::raw(e.kind(), format!("invalid value{value} in {var}{why}\n")).format(cmd)
}

/// The source of every option given anywhere; the rest are defaults.
#[derive(Clone, Debug, Default)]
pub struct Sources(HashMap<&'static str, Source>);

impl Sources {
    /// Merges the layers in the order of precedence: flags and variables over the file.
    pub(super) fn new(
        cli: &Cli,
        file: &Options,
        path: Option<&Path>,
        lines: &HashMap<String, usize>,
    ) -> Self {
        let mut map = HashMap::new();
        if let Some(path) = path {
            for key in file.given() {
                let line = lines.get(key).copied();
                map.insert(key, Source::File { path: path.to_owned(), line });
            }
        }
        for key in cli.options.given() {
            let source = cli.sources.0.get(key).cloned().unwrap_or_else(|| {
                let (flag, env) = names(key);
                Source::CommandLine { flag, env }
            });
            map.insert(key, source);
        }
        Sources(map)
    }

    /// Where `key`'s value came from.
    pub fn of(&self, key: &str) -> Source {
        self.0.get(key).cloned().unwrap_or(Source::Default)
    }
}

/// The 1-based line of each top-level key's value in a TOML text, from the parser's spans.
pub(super) fn key_lines(text: &str) -> HashMap<String, usize> {
    let Ok(table) = toml::from_str::<HashMap<String, toml::Spanned<toml::Value>>>(text) else {
        return HashMap::new();
    };
    let line_of = |offset: usize| text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1;
    table.into_iter().map(|(key, value)| (key, line_of(value.span().start))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn parse_args_records_flags() {
        let cli = Cli::parse_args(["throng", "--event-capacity", "0"]).unwrap();
        let sources = Sources::new(&cli, &Options::default(), None, &HashMap::new());
        assert_eq!(sources.of("event_capacity"), Source::Flag("--event-capacity".into()));
        assert_eq!(sources.of("loops"), Source::Default);
    }

    #[test]
    fn without_recorded_sources_both_names_are_given() {
        // A `Cli` from the derived parser does not know flag from variable.
        let cli = Cli::try_parse_from(["throng", "--max-message-size", "0"]).unwrap();
        let sources = Sources::new(&cli, &Options::default(), None, &HashMap::new());
        assert_eq!(
            sources.of("max_message_size").to_string(),
            "set by --max-message-size or THRONG_MAX_MESSAGE_SIZE"
        );
    }

    #[test]
    fn the_file_names_the_line_and_the_command_line_wins() {
        let text = "# a comment\nloops = 2\n\nworkers = 0\n";
        let file: Options = toml::from_str(text).unwrap();
        let cli = Cli::parse_args(["throng", "--loops", "3"]).unwrap();
        let sources = Sources::new(&cli, &file, Some(Path::new("t.toml")), &key_lines(text));
        assert_eq!(sources.of("workers").to_string(), "set in t.toml line 4");
        assert_eq!(sources.of("loops"), Source::Flag("--loops".into()));
    }
}
