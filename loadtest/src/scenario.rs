//! Scenario files (`throng-load scenario URL FILE.toml`): a run in phases, read and checked
//! here; `mode/scenario.rs` runs it.
//!
//! ```toml
//! thresholds = ["p99<200ms", "errors<1%"]   # as --threshold, added to those given
//!
//! [message]
//! kind = "text"                              # or "binary"
//! sizes = [{ bytes = 64, weight = 9 }, { bytes = 1024, weight = 1 }]
//! template = '{"seq":{seq},"ts":{ts},"pad":"{pad}"}'
//!
//! [subscribe]                                # a share of the connections subscribe, send nothing
//! share = 0.1
//! channel = "news"
//!
//! [slow_readers]                             # a share of each kind of connection reads late
//! share = 0.05
//! pause = "200ms"
//!
//! [[phase]]
//! name = "ramp up"
//! duration = "10s"
//! connections = 1000                         # open at the phase's end (linear from the last)
//! connect_rate = "200/s"                     # new connections per second at most
//! message_rate = "5/s"                       # per sending connection at the phase's end
//! ```
//!
//! Every key is checked: an unknown key, a wrong type or a bad value is an error that names the
//! file, the line and the key. Connections and message rate go linearly from the previous
//! phase's end value (0 before the first) to the phase's own; a phase that leaves one out holds
//! it. Both are [`Ramp`]s, the same rule as `echo --ramp`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::ramp::Ramp;
use crate::threshold::Threshold;

/// The largest message a scenario may send (a bound on the buffer each message is built in).
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// The most connections a scenario may ask for (one descriptor each).
pub(crate) const MAX_CONNECTIONS: u64 = 1_000_000;

/// The most phases (each is a row of the report).
const MAX_PHASES: usize = 1000;

/// The payload template when none is given: a JSON object.
const DEFAULT_TEMPLATE: &str = r#"{"seq":{seq},"ts":{ts},"pad":"{pad}"}"#;

/// A checked scenario.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    /// The file, as given.
    pub(crate) path: String,
    pub(crate) phases: Vec<PhasePlan>,
    /// Connections open over time.
    pub(crate) conns: Ramp,
    /// Messages per second per sending connection over time; `None`: none sent.
    pub(crate) rate: Option<Ramp>,
    pub(crate) binary: bool,
    /// `(bytes, weight)`, the weights summing to 1.
    pub(crate) sizes: Vec<(usize, f64)>,
    pub(crate) template: Template,
    /// `(share, channel)`.
    pub(crate) subscribe: Option<(f64, String)>,
    /// `(share, pause)`.
    pub(crate) slow_readers: Option<(f64, Duration)>,
    pub(crate) thresholds: Vec<Threshold>,
}

/// One phase, resolved (the values it holds filled in).
#[derive(Clone, Debug)]
pub(crate) struct PhasePlan {
    pub(crate) name: String,
    pub(crate) secs: f64,
    /// Connections open at the phase's end.
    pub(crate) connections: u64,
    /// New connections per second at most (`None`: as fast as `--concurrency` allows).
    pub(crate) connect_rate: Option<f64>,
    /// Messages per second per sending connection at the phase's end.
    pub(crate) message_rate: f64,
}

impl Scenario {
    /// The whole run's planned length.
    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.phases.iter().map(|p| p.secs).sum())
    }

    /// The scenario of the command line (`scenario URL --conns-ramp …`): connections on `conns`,
    /// messages on `rate` (none without), `connect_rate` throughout, one size, no subscribers or
    /// slow readers. Its phases, for the report, end where a phase of either ramp ends.
    pub(crate) fn from_ramps(
        conns: Ramp,
        rate: Option<Ramp>,
        connect_rate: Option<f64>,
        size: usize,
        binary: bool,
    ) -> Scenario {
        let mut ends = conns.ends();
        ends.extend(rate.iter().flat_map(Ramp::ends));
        ends.sort_by(f64::total_cmp);
        ends.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        let mut t0 = 0.0;
        let phases = (ends.iter())
            .map(|&end| {
                // The values the phase ends at (just before a jump of `echo --ramp`'s grammar).
                let at = end - 1e-9;
                let phase = PhasePlan {
                    name: format!("{}s-{}s", crate::stats::round3(t0), crate::stats::round3(end)),
                    secs: end - t0,
                    connections: conns.rate_at(at).round() as u64,
                    connect_rate,
                    message_rate: crate::stats::round3(rate.as_ref().map_or(0.0, |r| r.rate_at(at))),
                };
                t0 = end;
                phase
            })
            .collect();
        Scenario {
            path: format!("--conns-ramp {}", conns.text()),
            phases,
            conns,
            rate,
            binary,
            sizes: vec![(size.min(MAX_MESSAGE), 1.0)],
            template: Template::parse(DEFAULT_TEMPLATE),
            subscribe: None,
            slow_readers: None,
            thresholds: Vec::new(),
        }
    }

    /// The connection count phase `i` rises to (its end count, when above the previous phase's,
    /// 0 before the first): what the progress bar counts towards while the phase opens
    /// connections; `None` for a phase that holds or closes them.
    pub(crate) fn rising_target(&self, i: usize) -> Option<u64> {
        let before = i.checked_sub(1).and_then(|j| self.phases.get(j)).map_or(0, |p| p.connections);
        let end = self.phases.get(i)?.connections;
        (end > before).then_some(end)
    }

    /// The phase running at `t` seconds since the start (the last one after the end).
    pub(crate) fn phase_at(&self, t: f64) -> usize {
        let mut end = 0.0;
        for (i, phase) in self.phases.iter().enumerate() {
            end += phase.secs;
            if t < end {
                return i;
            }
        }
        self.phases.len() - 1
    }

    /// The size of a message, drawn from the distribution with `x` uniform in [0, 1).
    pub(crate) fn size(&self, x: f64) -> usize {
        let mut acc = 0.0;
        for &(bytes, weight) in &self.sizes {
            acc += weight;
            if x < acc {
                return bytes;
            }
        }
        self.sizes.last().map_or(0, |s| s.0)
    }
}

/// A payload template: literal text with `{seq}` (the connection's message number, decimal),
/// `{ts}` (the send time, Unix microseconds) and `{pad}` (`x` repeated to make the message its
/// drawn size; without `{pad}` the padding goes at the end). A message is never shorter than its
/// template with the fields filled in.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Seq,
    Ts,
    Pad,
}

impl Template {
    pub(crate) fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = ["{seq}", "{ts}", "{pad}"]
                .iter()
                .filter_map(|field| rest.find(field).map(|at| (at, *field)))
                .min_by_key(|&(at, _)| at);
            let Some((at, field)) = next else {
                parts.push(Part::Text(rest.to_owned()));
                break;
            };
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }
            parts.push(match field {
                "{seq}" => Part::Seq,
                "{ts}" => Part::Ts,
                _ => Part::Pad,
            });
            rest = &rest[at + field.len()..];
        }
        if !parts.contains(&Part::Pad) {
            parts.push(Part::Pad);
        }
        Template { parts }
    }

    /// Message `seq`, sent at `ts_us`, of `size` bytes (or the filled template's length, if
    /// longer), into `out`.
    pub(crate) fn fill(&self, out: &mut Vec<u8>, seq: u64, ts_us: u64, size: usize) {
        use std::io::Write as _;
        out.clear();
        let mut pad_at = 0;
        for part in &self.parts {
            match part {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Seq => {
                    let _ = write!(out, "{seq}");
                }
                Part::Ts => {
                    let _ = write!(out, "{ts_us}");
                }
                Part::Pad => pad_at = out.len(),
            }
        }
        let pad = size.saturating_sub(out.len());
        out.splice(pad_at..pad_at, std::iter::repeat_n(b'x', pad));
    }
}

// What the file holds, as written. Spans locate the errors found after parsing.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    #[serde(default)]
    thresholds: Vec<Spanned<String>>,
    #[serde(default)]
    message: MessageDef,
    subscribe: Option<Spanned<SubscribeDef>>,
    slow_readers: Option<Spanned<SlowDef>>,
    #[serde(default, rename = "phase")]
    phases: Vec<Spanned<PhaseDef>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageDef {
    #[serde(default)]
    kind: Kind,
    sizes: Option<Spanned<Vec<Spanned<SizeDef>>>>,
    template: Option<String>,
}

#[derive(Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Text,
    Binary,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SizeDef {
    bytes: Spanned<i64>,
    #[serde(default = "one")]
    weight: Spanned<f64>,
}

fn one() -> Spanned<f64> {
    Spanned::new(0..0, 1.0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeDef {
    share: Spanned<f64>,
    #[serde(default = "default_channel")]
    channel: Spanned<String>,
}

fn default_channel() -> Spanned<String> {
    Spanned::new(0..0, "loadtest".to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowDef {
    share: Spanned<f64>,
    #[serde(deserialize_with = "pause")]
    pause: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseDef {
    name: Option<String>,
    #[serde(deserialize_with = "duration")]
    duration: Duration,
    connections: Option<Spanned<i64>>,
    #[serde(default, deserialize_with = "connect_rate")]
    connect_rate: Option<f64>,
    #[serde(default, deserialize_with = "message_rate")]
    message_rate: Option<f64>,
}

/// A duration key: a string such as `30s`; the error names the key (toml adds the line).
macro_rules! duration_key {
    ($name:ident) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            let text = String::deserialize(d)?;
            match crate::cli::parse_duration(&text) {
                Ok(duration) if !duration.is_zero() => Ok(duration),
                Ok(_) => {
                    Err(serde::de::Error::custom(concat!("`", stringify!($name), "` must be more than 0")))
                }
                Err(e) => Err(serde::de::Error::custom(format!(concat!("`", stringify!($name), "`: {}"), e))),
            }
        }
    };
}
duration_key!(duration);
duration_key!(pause);

/// A rate key: a number or a string such as `"100/s"`, not negative.
macro_rules! rate_key {
    ($name:ident) => {
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Written {
                Number(f64),
                Text(String),
            }
            let fail = |what: String| {
                serde::de::Error::custom(format!(concat!("`", stringify!($name), "`: {}"), what))
            };
            match Written::deserialize(d)
                .map_err(|_| fail("a rate per second, e.g. 100 or \"100/s\"".into()))?
            {
                Written::Number(rate) if rate >= 0.0 && rate.is_finite() => Ok(Some(rate)),
                Written::Number(rate) => Err(fail(format!("{rate}: a rate per second that is not negative"))),
                Written::Text(text) => crate::ramp::rate(&text).map(Some).map_err(fail),
            }
        }
    };
}
rate_key!(connect_rate);
rate_key!(message_rate);

/// Reads and checks the scenario at `path` (the value parser of `scenario FILE`).
pub(crate) fn load(path: &str) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    parse(path, &text)
}

/// Checks the scenario `text` (read from `path`, for the messages).
pub(crate) fn parse(path: &str, text: &str) -> Result<Scenario, String> {
    let def: FileDef = toml::from_str(text).map_err(|e| format!("{path}: {e}"))?;
    // An error found after parsing, at the span of the value: "FILE: line N, KEY: what".
    let at = |span: std::ops::Range<usize>, key: &str, what: &str| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!("{path}: line {line}, `{key}`: {what}")
    };
    if def.phases.is_empty() {
        return Err(format!("{path}: no [[phase]]: a scenario needs at least one (with `duration`)"));
    }
    if def.phases.len() > MAX_PHASES {
        return Err(format!("{path}: {} phases, at most {MAX_PHASES}", def.phases.len()));
    }
    let mut phases = Vec::with_capacity(def.phases.len());
    let (mut connections, mut message_rate) = (0u64, 0.0f64);
    for (i, spanned) in def.phases.iter().enumerate() {
        let phase = spanned.get_ref();
        if let Some(n) = &phase.connections {
            match u64::try_from(*n.get_ref()) {
                Ok(n) if n <= MAX_CONNECTIONS => connections = n,
                _ => {
                    return Err(at(
                        n.span(),
                        "connections",
                        &format!("{}: from 0 to {MAX_CONNECTIONS}", n.get_ref()),
                    ))
                }
            }
        }
        if let Some(rate) = phase.connect_rate.filter(|&rate| rate == 0.0) {
            return Err(at(
                spanned.span(),
                "connect_rate",
                &format!("{rate}: more than 0 (or leave it out)"),
            ));
        }
        message_rate = phase.message_rate.unwrap_or(message_rate);
        phases.push(PhasePlan {
            name: phase.name.clone().unwrap_or_else(|| format!("phase {}", i + 1)),
            secs: phase.duration.as_secs_f64(),
            connections,
            connect_rate: phase.connect_rate,
            message_rate,
        });
    }
    let label = |value: &dyn Fn(&PhasePlan) -> f64| {
        phases.iter().map(|p| format!("{}:{}s", value(p), p.secs)).collect::<Vec<_>>().join(",")
    };
    let conn_steps: Vec<(f64, f64)> = phases.iter().map(|p| (p.connections as f64, p.secs)).collect();
    let Some(conns) = Ramp::from_steps(0.0, &conn_steps, label(&|p| p.connections as f64)) else {
        return Err(format!("{path}: no phase has `connections` above 0: nothing would connect"));
    };
    let rate_steps: Vec<(f64, f64)> = phases.iter().map(|p| (p.message_rate, p.secs)).collect();
    let rate = Ramp::from_steps(0.0, &rate_steps, label(&|p| p.message_rate));

    let sizes = match &def.message.sizes {
        None => vec![(32, 1.0)],
        Some(list) if list.get_ref().is_empty() => {
            return Err(at(list.span(), "sizes", "an empty list: give at least one { bytes = N }"))
        }
        Some(list) => {
            let mut sizes = Vec::new();
            for size in list.get_ref() {
                let (bytes, weight) = (&size.get_ref().bytes, &size.get_ref().weight);
                let Some(n) = usize::try_from(*bytes.get_ref()).ok().filter(|&n| n <= MAX_MESSAGE) else {
                    let what = format!("{}: from 0 to {MAX_MESSAGE}", bytes.get_ref());
                    return Err(at(bytes.span(), "bytes", &what));
                };
                let w = *weight.get_ref();
                if !(w > 0.0 && w.is_finite()) {
                    let span = if weight.span().is_empty() { size.span() } else { weight.span() };
                    return Err(at(span, "weight", &format!("{w}: more than 0")));
                }
                sizes.push((n, w));
            }
            let total: f64 = sizes.iter().map(|s| s.1).sum();
            sizes.iter().map(|&(n, w)| (n, w / total)).collect()
        }
    };
    let share = |spanned: &Spanned<f64>| {
        let share = *spanned.get_ref();
        if (0.0..=1.0).contains(&share) {
            Ok(share)
        } else {
            Err(at(spanned.span(), "share", &format!("{share}: a share from 0 to 1 (0.1 is 10 %)")))
        }
    };
    let subscribe = match &def.subscribe {
        None => None,
        Some(sub) => {
            let sub = sub.get_ref();
            let channel = sub.channel.get_ref();
            let valid = |b: u8| b.is_ascii_alphanumeric() || b"._-:@/".contains(&b);
            if channel.is_empty() || channel.len() > 200 || !channel.bytes().all(valid) {
                let what =
                    format!("{channel:?}: 1-200 bytes of A-Z a-z 0-9 . _ - : @ / (the gateway's rule)");
                return Err(at(sub.channel.span(), "channel", &what));
            }
            Some((share(&sub.share)?, channel.clone()))
        }
    };
    let slow_readers = match &def.slow_readers {
        None => None,
        Some(slow) => Some((share(&slow.get_ref().share)?, slow.get_ref().pause)),
    };
    let mut thresholds = Vec::with_capacity(def.thresholds.len());
    for spanned in &def.thresholds {
        let threshold = crate::threshold::parse(spanned.get_ref());
        thresholds.push(threshold.map_err(|e| at(spanned.span(), "thresholds", &e))?);
    }
    let template = Template::parse(def.message.template.as_deref().unwrap_or(DEFAULT_TEMPLATE));
    Ok(Scenario {
        path: path.to_owned(),
        phases,
        conns,
        rate,
        binary: def.message.kind == Kind::Binary,
        sizes,
        template,
        subscribe,
        slow_readers,
        thresholds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
thresholds = ["p99<1s"]

[message]
kind = "binary"
sizes = [{ bytes = 10, weight = 3 }, { bytes = 100 }]
template = "s={seq};t={ts};"

[subscribe]
share = 0.25
channel = "news"

[[phase]]
duration = "2s"
connections = 10
connect_rate = "5/s"
message_rate = 4

[[phase]]
name = "hold"
duration = "1s"

[[phase]]
duration = "500ms"
connections = 0
"#;

    #[test]
    fn a_scenario_resolves_its_phases() {
        let s = parse("x.toml", GOOD).unwrap();
        assert_eq!(s.phases.len(), 3);
        assert_eq!(
            (s.phases[1].name.as_str(), s.phases[1].connections, s.phases[1].message_rate),
            ("hold", 10, 4.0)
        );
        assert_eq!(s.phases[2].name, "phase 3");
        assert_eq!((s.phases[0].connect_rate, s.phases[1].connect_rate), (Some(5.0), None));
        assert_eq!(s.duration(), Duration::from_millis(3500));
        // The bar counts towards 10 while the first phase opens them; holding and closing: none.
        assert_eq!([0, 1, 2, 3].map(|i| s.rising_target(i)), [Some(10), None, None, None]);
        assert!((s.conns.rate_at(1.0) - 5.0).abs() < 1e-9 && (s.conns.rate_at(2.5) - 10.0).abs() < 1e-9);
        assert!((s.conns.rate_at(3.25) - 5.0).abs() < 1e-9);
        assert!((s.rate.as_ref().unwrap().rate_at(1.0) - 2.0).abs() < 1e-9);
        assert_eq!(s.sizes, [(10, 0.75), (100, 0.25)]);
        assert_eq!((s.size(0.5), s.size(0.8), s.size(0.999_999)), (10, 100, 100));
        assert!(s.binary && s.subscribe == Some((0.25, "news".into())) && s.slow_readers.is_none());
        assert_eq!((s.phase_at(0.0), s.phase_at(2.0), s.phase_at(3.4), s.phase_at(9.0)), (0, 1, 2, 2));
        assert_eq!(s.thresholds.len(), 1);
    }

    #[test]
    fn command_line_ramps_make_phases_where_either_changes() {
        let conns = crate::ramp::parse("0:10:2s,hold:2s").unwrap();
        let rate = crate::ramp::parse("5:5:1s,5:20:3s").unwrap();
        let s = Scenario::from_ramps(conns, Some(rate), Some(50.0), 100, true);
        let ends: Vec<(f64, u64, f64)> =
            s.phases.iter().map(|p| (p.secs, p.connections, p.message_rate)).collect();
        assert_eq!(ends, [(1.0, 5, 5.0), (1.0, 10, 10.0), (2.0, 10, 20.0)]);
        assert_eq!((s.phases[0].name.as_str(), s.duration()), ("0s-1s", Duration::from_secs(4)));
        assert_eq!(
            (s.sizes.as_slice(), s.binary, s.phases[2].connect_rate),
            (&[(100, 1.0)][..], true, Some(50.0))
        );
    }

    #[test]
    fn templates_fill_their_fields_and_pad_to_the_size() {
        let mut out = Vec::new();
        let t = Template::parse(r#"{"seq":{seq},"ts":{ts},"pad":"{pad}"}"#);
        t.fill(&mut out, 42, 7, 40);
        assert_eq!(out, br#"{"seq":42,"ts":7,"pad":"xxxxxxxxxxxxxx"}"#);
        assert_eq!(out.len(), 40);
        t.fill(&mut out, 42, 7, 3);
        assert_eq!(out, br#"{"seq":42,"ts":7,"pad":""}"#);
        Template::parse("a{b}").fill(&mut out, 1, 1, 6);
        assert_eq!(out, b"a{b}xx");
        Template::parse("").fill(&mut out, 1, 1, 2);
        assert_eq!(out, b"xx");
    }

    /// The error for `text`, which must name `line` and `key`.
    fn error(text: &str, line: usize, key: &str) -> String {
        let e = parse("bad.toml", text).unwrap_err();
        assert!(e.starts_with("bad.toml: "), "{e}");
        assert!(e.contains(&format!("line {line}")), "line {line} in: {e}");
        assert!(e.contains(key), "{key} in: {e}");
        e
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let phase = "[[phase]]\nduration = \"1s\"\nconnections = 1\n";
        error(&format!("{phase}colour = 3\n"), 4, "colour");
        error("[[phase]]\nduration = \"1x\"\n", 2, "duration");
        error("[[phase]]\nduration = \"0s\"\n", 2, "duration");
        error(&format!("{phase}message_rate = \"fast\"\n"), 4, "message_rate");
        error(&format!("{phase}message_rate = -1\n"), 4, "message_rate");
        error("[[phase]]\nconnections = 1\n", 1, "duration");
        error("[[phase]]\nduration = \"1s\"\nconnections = -5\n", 3, "connections");
        error(&format!("[message]\nkind = \"json\"\n{phase}"), 2, "kind");
        error(&format!("[message]\nsizes = [{{ bytes = 1 }}, {{ bytes = -1 }}]\n{phase}"), 2, "bytes");
        error(&format!("[message]\nsizes = [\n  {{ bytes = 1, weight = 0 }},\n]\n{phase}"), 3, "weight");
        error(&format!("[message]\nsizes = [{{ size = 1 }}]\n{phase}"), 2, "size");
        error(&format!("{phase}[subscribe]\nshare = 1.5\n"), 5, "share");
        error(&format!("{phase}[subscribe]\nshare = 0.5\nchannel = \"a b\"\n"), 6, "channel");
        error(&format!("{phase}[slow_readers]\nshare = 0.5\n"), 4, "pause");
        error(&format!("thresholds = [\"p99<fast\"]\n{phase}"), 1, "thresholds");
        assert!(parse("f", "").unwrap_err().contains("no [[phase]]"));
        assert!(parse("f", "[[phase]]\nduration = \"1s\"\n").unwrap_err().contains("nothing would connect"));
    }
}
