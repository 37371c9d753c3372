//! `--report FILE.html`: one self-contained page (no external resource) with the final table, a
//! latency histogram and, over time (the per-second series), the send and echo rates, p50 and p99
//! latency, the connections open and the client's and server's CPU, as inline SVG. One short
//! inline script only counts the charts the browser drew (`data-charts-drawn` on `<body>`), for
//! the headless-Chromium test.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::ctl::Sample;
use crate::mode::Report;
use crate::stats::{fmt_us, Latency};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_BOTTOM: f64 = 40.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_RIGHT: f64 = 20.0;

pub(crate) fn write<R: Report>(path: &Path, report: &R) -> io::Result<()> {
    let json = serde_json::to_value(report).map_err(io::Error::other)?;
    let mode = json.get("mode").and_then(|m| m.as_str()).unwrap_or("run").to_owned();
    let ok = report.ok();
    let rows = report.rows();
    let (title, latency) = report.chart();
    let series: Vec<Sample> =
        json.get("series").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default();
    let mut page = String::with_capacity(64 * 1024);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>throng-load {mode}</title>\n<style>{STYLE}</style></head><body>\n<h1>throng-load {mode} <span class=\"{}\">{}</span></h1>\n",
        if ok { "ok" } else { "bad" },
        if ok { "checks passed" } else { "checks failed" }
    );
    meta(&mut page);
    page.push_str("<table>\n");
    for (key, value) in &rows {
        let _ = writeln!(page, "<tr><th>{}</th><td>{}</td></tr>", esc(key.trim()), esc(value));
    }
    page.push_str("</table>\n");
    let _ = write!(page, "<h2>{}</h2>\n{}\n", esc(title), histogram_svg(latency));
    page.push_str(&percentile_table(latency));
    over_time(&mut page, &[(String::new(), series)], report.ops_name());
    let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
    let _ = write!(
        page,
        "<details><summary>JSON report</summary><pre>{}</pre></details>\n{COUNT_SCRIPT}</body></html>\n",
        esc(&pretty)
    );
    std::fs::write(path, page)
}

/// `compare --report FILE.html`: the comparison table (`rows`, the first one the header), then
/// the servers' series over time, one line per server in each chart.
pub(crate) fn write_compare(
    path: &Path,
    run: &str,
    rows: &[Vec<String>],
    series: &[(String, Vec<Sample>)],
) -> io::Result<()> {
    let mut page = String::with_capacity(32 * 1024);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>throng-load compare</title>\n<style>{STYLE}</style></head><body>\n<h1>throng-load compare: {}</h1>\n",
        esc(run)
    );
    meta(&mut page);
    page.push_str("<table>\n");
    for (i, row) in rows.iter().enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        page.push_str("<tr>");
        for cell in row {
            let _ = write!(page, "<{tag}>{}</{tag}>", esc(cell));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    over_time(&mut page, series, "operations");
    page.push_str(COUNT_SCRIPT);
    page.push_str("</body></html>\n");
    std::fs::write(path, page)
}

/// Sets `data-charts-drawn` on `<body>` to the number of charts in which the browser laid out at
/// least one data mark (class `m`: a line, a point, a bar) with a non-zero size (what the
/// headless-Chromium test reads).
const COUNT_SCRIPT: &str = "<script>addEventListener('load',function(){var n=0;\
document.querySelectorAll('svg.chart').forEach(function(s){var d=Array.prototype.some.call(\
s.querySelectorAll('.m'),function(m){var b=m.getBBox();return b.width>0&&b.height>0;});if(d)n++;});\
document.body.setAttribute('data-charts-drawn',n);});</script>\n";

/// Colours of the lines of one chart, in order.
const COLORS: [&str; 6] = ["#2060c0", "#c07000", "#20a060", "#c0262d", "#7040b0", "#606060"];

/// The charts over time of one run (`name` empty) or of each server of a comparison: rates,
/// latency per second, connections open, CPU. A chart whose values no run measured is left out.
fn over_time(page: &mut String, runs: &[(String, Vec<Sample>)], ops: &str) {
    type Pick = fn(&Sample) -> Option<f64>;
    /// A chart: its title, the metrics it draws (indexes into `metrics`), how values read.
    type Chart = (String, &'static [usize], fn(f64) -> String);
    let metrics: [(&str, Pick); 7] = [
        ("sent/s", |s| s.sent_per_s),
        ("completed/s", |s| Some(s.ops_per_s)),
        ("p50", |s| s.p50_us),
        ("p99", |s| s.p99_us),
        ("open", |s| Some(s.open as f64)),
        ("server", |s| s.server_cpu),
        ("client", |s| s.client_cpu),
    ];
    let charts: [Chart; 4] = [
        (format!("Rate: messages sent and {ops} completed per second"), &[0, 1], fmt_count),
        ("Latency per second: p50 and p99".to_owned(), &[2, 3], fmt_us),
        ("Connections open".to_owned(), &[4], fmt_count),
        ("CPU: cores busy, server and client".to_owned(), &[5, 6], fmt_cores),
    ];
    for (title, picks, fmt) in charts {
        let mut lines = Vec::new();
        for (name, samples) in runs {
            for &i in picks {
                let (what, pick) = metrics[i];
                let points: Vec<(f64, f64)> =
                    samples.iter().filter_map(|s| pick(s).map(|v| (s.t_s, v))).collect();
                if points.is_empty() {
                    continue;
                }
                let label = match (name.is_empty(), picks.len() > 1) {
                    (true, _) => what.to_owned(),
                    (false, true) => format!("{name} {what}"),
                    (false, false) => name.clone(),
                };
                lines.push(Line { label, color: COLORS[lines.len() % COLORS.len()], points });
            }
        }
        if lines.is_empty() {
            continue;
        }
        let _ = write!(page, "<h2>{}</h2>\n{}\n", esc(&title), lines_svg(&lines, fmt));
    }
}

/// `0.53`: cores busy.
fn fmt_cores(v: f64) -> String {
    format!("{v:.2}")
}

/// One line of a chart over time.
pub(crate) struct Line {
    pub(crate) label: String,
    pub(crate) color: &'static str,
    /// `(seconds, value)`.
    pub(crate) points: Vec<(f64, f64)>,
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:820px;color:#222}\
h1{font-size:22px}h2{font-size:16px;margin-top:1.6em}.ok{color:#1a7f37}.bad{color:#c0262d}\
.meta{color:#555}code{font-size:12px;word-break:break-all}table{border-collapse:collapse;margin:.5em 0}\
th,td{text-align:left;padding:3px 10px 3px 0;vertical-align:top}th{white-space:nowrap;color:#444}\
td{font-family:ui-monospace,monospace;font-size:12px}svg{background:#fafafa;border:1px solid #ddd}\
svg text{font:11px sans-serif;fill:#444}pre{font-size:11px;overflow:auto;background:#f4f4f4;padding:8px}";

/// The line under a report's title: the command that made it, when, and on what machine.
fn meta(page: &mut String) {
    let command: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    let _ = writeln!(
        page,
        "<p class=\"meta\"><code>{}</code><br>{} · {}</p>",
        esc(&command.join(" ")),
        esc(&humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        esc(&machine())
    );
}

/// `2 cores, Intel(R) Xeon(R) …, Linux 6.1`.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {model}, Linux {}", kernel.trim())
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b)) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Plot area in pixels.
fn area() -> (f64, f64, f64, f64) {
    (MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM)
}

fn svg_open(out: &mut String) {
    let _ = write!(
        out,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">"
    );
}

/// Closes a chart with `caption` centred under its x axis.
fn svg_close(out: &mut String, caption: &str) {
    let (x0, x1, _, _) = area();
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{caption}</text></svg>",
        (x0 + x1) / 2.0,
        HEIGHT - 6.0
    );
}

/// Closes a chart that has nothing to plot, with `message` where the plot would be.
fn svg_close_empty(out: &mut String, message: &str) {
    let (x0, _, y0, y1) = area();
    let _ = write!(out, "<text x=\"{}\" y=\"{}\">{message}</text></svg>", x0 + 10.0, (y0 + y1) / 2.0);
}

/// A "nice" round step for about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().find(|m| m * magnitude >= raw).unwrap_or(10.0);
    step * magnitude
}

fn fmt_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Bars of the latency distribution on a logarithmic time axis (about 12 bins per decade),
/// with the p50, p99 and p99.9 marked.
pub(crate) fn histogram_svg(latency: &Latency) -> String {
    let mut out = String::new();
    svg_open(&mut out);
    let (x0, x1, y0, y1) = area();
    let hist = latency.hist();
    if hist.is_empty() {
        svg_close_empty(&mut out, "no samples");
        return out;
    }
    let (lo, hi) = ((hist.min().max(1) as f64).log10(), (hist.max().max(2) as f64).log10());
    let (lo, hi) = (lo.floor(), (hi + 1e-9).ceil().max(lo.floor() + 1.0));
    const PER_DECADE: f64 = 12.0;
    let bins = ((hi - lo) * PER_DECADE).round() as usize;
    let mut counts = vec![0u64; bins];
    for v in hist.iter_recorded() {
        let x = (v.value_iterated_to().max(1) as f64).log10();
        let i = (((x - lo) * PER_DECADE) as usize).min(bins - 1);
        counts[i] += v.count_at_value();
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let sx = |x: f64| x0 + (x - lo) / (hi - lo) * (x1 - x0);
    let sy = |c: f64| y1 - c / max * (y1 - y0);
    let bar = (x1 - x0) / bins as f64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 {
            let x = x0 + i as f64 * bar;
            let _ = write!(
                out,
                "<rect class=\"m\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#5b8fd6\"><title>{c}</title></rect>",
                sy(c as f64),
                (bar - 1.0).max(1.0),
                y1 - sy(c as f64)
            );
        }
    }
    axes(&mut out);
    // Decade ticks: 1µs, 10µs, …
    let mut d = lo;
    while d <= hi + 1e-9 {
        let x = sx(d);
        let label = fmt_us(10f64.powf(d) / 1000.0);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#888\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            y1 + 4.0,
            y1 + 16.0
        );
        d += 1.0;
    }
    for (q, name, color) in [(0.5, "p50", "#1a7f37"), (0.99, "p99", "#c07000"), (0.999, "p99.9", "#c0262d")] {
        let v = hist.value_at_quantile(q).max(1) as f64;
        let x = sx(v.log10());
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{y1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{}\" fill=\"{color}\">{name} {}</text>",
            x + 3.0,
            y0 - 6.0 + if name == "p99" { 12.0 } else { 0.0 },
            fmt_us(v / 1000.0)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        x0 - 6.0,
        y0 + 4.0,
        fmt_count(max)
    );
    svg_close(&mut out, "latency (log scale); bar height: count");
    out
}

fn axes(out: &mut String) {
    let (x0, x1, y0, y1) = area();
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#444\"/><line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#444\"/>"
    );
}

/// A line over time (`(seconds, value)` points) with round ticks on both axes.
#[cfg(test)]
fn line_svg(points: &[(f64, f64)], color: &'static str) -> String {
    lines_svg(&[Line { label: String::new(), color, points: points.to_vec() }], fmt_count)
}

/// Lines over time on shared axes with round ticks (values labelled by `fmt`), and a legend
/// when they have labels.
pub(crate) fn lines_svg(lines: &[Line], fmt: fn(f64) -> String) -> String {
    let mut out = String::new();
    svg_open(&mut out);
    let (x0, x1, y0, y1) = area();
    let all = || lines.iter().flat_map(|line| line.points.iter());
    if all().next().is_none() {
        svg_close_empty(&mut out, "no samples (the run was shorter than a second)");
        return out;
    }
    let t_max = all().map(|p| p.0).fold(1.0, f64::max);
    let v_max = all().map(|p| p.1).fold(0.0, f64::max);
    // Small values (latency in µs, CPU in cores) keep their scale; counts start at 1.
    let v_max = if v_max > 0.0 { v_max } else { 1.0 };
    let y_step = nice_step(v_max, 5.0);
    let v_top = (v_max / y_step).ceil() * y_step;
    let sx = |t: f64| x0 + t / t_max * (x1 - x0);
    let sy = |v: f64| y1 - v / v_top * (y1 - y0);
    let mut v = 0.0;
    while v <= v_top + y_step * 1e-9 {
        let y = sy(v);
        let _ = write!(
            out,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 - 6.0,
            y + 4.0,
            fmt(v)
        );
        v += y_step;
    }
    let t_step = nice_step(t_max, 8.0);
    let mut t = 0.0;
    while t <= t_max + t_step * 1e-9 {
        let x = sx(t);
        let _ = write!(out, "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{t}s</text>", y1 + 16.0);
        t += t_step;
    }
    axes(&mut out);
    let mut legend_x = x0 + 8.0;
    for line in lines {
        let color = line.color;
        let path: Vec<String> =
            line.points.iter().map(|&(t, v)| format!("{:.1},{:.1}", sx(t), sy(v))).collect();
        let _ = write!(
            out,
            "<polyline class=\"m\" points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
            path.join(" ")
        );
        let prefix = if line.label.is_empty() { String::new() } else { format!("{} ", esc(&line.label)) };
        for &(t, v) in &line.points {
            let _ = write!(
                out,
                "<circle class=\"m\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"><title>{prefix}{t}s: {}</title></circle>",
                sx(t),
                sy(v),
                fmt(v)
            );
        }
        if !line.label.is_empty() {
            let _ = write!(
                out,
                "<rect x=\"{legend_x:.1}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{}\">{}</text>",
                y0 - 20.0,
                legend_x + 14.0,
                y0 - 11.0,
                esc(&line.label)
            );
            legend_x += 24.0 + 7.0 * line.label.chars().count() as f64;
        }
    }
    svg_close(&mut out, "seconds since start");
    out
}

fn percentile_table(latency: &Latency) -> String {
    let p = latency.summary();
    let mut out = String::from("<table><tr>");
    for name in ["count", "mean", "p50", "p90", "p99", "p99.9", "max"] {
        let _ = write!(out, "<th>{name}</th>");
    }
    out.push_str("</tr><tr>");
    let cells = [
        p.count.to_string(),
        fmt_us(p.mean_us),
        fmt_us(p.p50_us),
        fmt_us(p.p90_us),
        fmt_us(p.p99_us),
        fmt_us(p.p999_us),
        fmt_us(p.max_us),
    ];
    for cell in cells {
        let _ = write!(out, "<td>{}</td>", esc(&cell));
    }
    out.push_str("</tr></table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_and_escape_text() {
        let mut l = Latency::new();
        for us in [5u64, 50, 500, 5000, 5000, 50_000] {
            l.record(std::time::Duration::from_micros(us));
        }
        let svg = histogram_svg(&l);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("p99") && svg.contains("<rect"));
        assert!(histogram_svg(&Latency::new()).contains("no samples"));
        let line = line_svg(&[(1.0, 10.0), (2.0, 2500.0), (3.0, 7.0)], "#000");
        assert_eq!(line.matches("<circle").count(), 3);
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(nice_step(7300.0, 5.0), 2000.0);
    }
}
