//! `bench plot`: reads bench results (JSON lines; other lines are skipped)
//! and draws fields against each other as a self-contained SVG line chart,
//! e.g. p50/p99 latency against msgs/s from several `rate` runs, or server
//! memory against connections from several `conns` runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Files of bench output; every line that is a JSON object is a point.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The SVG to write.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Field on the x axis.
    #[arg(long)]
    pub x: String,
    /// Fields on the y axis, comma separated (one line each).
    #[arg(long, value_delimiter = ',', required = true)]
    pub y: Vec<String>,
    /// Split lines by this field's value too (e.g. target).
    #[arg(long)]
    pub series: Option<String>,
    /// Only points whose field has this value: NAME=VALUE.
    #[arg(long)]
    pub only: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    pub x_scale: f64,
    #[arg(long, default_value_t = 1.0)]
    pub y_scale: f64,
    /// Logarithmic y axis.
    #[arg(long)]
    pub log_y: bool,
    #[arg(long, default_value = "")]
    pub title: String,
    #[arg(long, default_value = "")]
    pub xlabel: String,
    #[arg(long, default_value = "")]
    pub ylabel: String,
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const L: f64 = 80.0;
const R: f64 = 180.0;
const T: f64 = 40.0;
const B: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// About five round tick values covering lo..hi.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 {
        out.push(v);
        v += step;
    }
    out
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3}M", v / 1e6).replace(".000M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn run(a: PlotArgs) -> anyhow::Result<()> {
    let only = a
        .only
        .as_deref()
        .map(|o| o.split_once('=').context("--only NAME=VALUE"))
        .transpose()?;
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for path in &a.inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some((k, v)) = only
                && o.get(k).map(text_of).as_deref() != Some(v)
            {
                continue;
            }
            let Some(x) = o.get(&a.x).and_then(Value::as_f64) else {
                continue;
            };
            let tag = a
                .series
                .as_ref()
                .and_then(|s| o.get(s))
                .map(text_of)
                .unwrap_or_default();
            for y in &a.y {
                if let Some(yv) = o.get(y).and_then(Value::as_f64) {
                    let name = if tag.is_empty() {
                        y.clone()
                    } else {
                        format!("{tag} {y}")
                    };
                    lines
                        .entry(name)
                        .or_default()
                        .push((x * a.x_scale, yv * a.y_scale));
                }
            }
        }
    }
    if lines.is_empty() {
        bail!("no point has both {} and one of {:?}", a.x, a.y);
    }
    for pts in lines.values_mut() {
        pts.sort_by(|p, q| p.0.total_cmp(&q.0));
    }
    let svg = draw(&a, &lines);
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&a.out, svg).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "plot: {} lines, {} points -> {}",
        lines.len(),
        lines.values().map(Vec::len).sum::<usize>(),
        a.out.display()
    );
    Ok(())
}

fn draw(a: &PlotArgs, lines: &BTreeMap<String, Vec<(f64, f64)>>) -> String {
    let pts = lines.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    x0 = x0.min(0.0);
    let ylog = a.log_y && y0 > 0.0;
    let fy = |y: f64| if ylog { y.log10() } else { y };
    let (mut ly0, mut ly1) = if ylog {
        (y0.log10().floor(), y1.log10().ceil())
    } else {
        (y0.min(0.0), y1 * 1.05)
    };
    if ly1 <= ly0 {
        ly1 = ly0 + 1.0;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if !ylog {
        ly0 = ly0.min(0.0);
    }
    let pw = W - L - R;
    let ph = H - T - B;
    let sx = |x: f64| L + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| T + ph - (fy(y) - ly0) / (ly1 - ly0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        L + pw / 2.0,
        esc(&a.title)
    );
    for t in ticks(x0, x1) {
        let x = sx(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            T + ph,
            T + ph + 16.0,
            fmt_num(t)
        );
    }
    let yt: Vec<f64> = if ylog {
        (ly0 as i32..=ly1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        ticks(ly0, ly1)
    };
    for t in yt {
        let y = sy(t);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            L + pw,
            L - 6.0,
            y + 4.0,
            fmt_num(t)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        L + pw / 2.0,
        H - 18.0,
        esc(&a.xlabel),
        T + ph / 2.0,
        esc(&a.ylabel)
    );
    for (i, (name, pts)) in lines.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: x {}, y {}</title></circle>"#,
                sx(x),
                sy(y),
                esc(name),
                fmt_num(x),
                fmt_num(y)
            );
        }
        let ly = T + 10.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            W - R + 12.0,
            W - R + 32.0,
            W - R + 38.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_ticks() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 73_000.0);
        assert!(t.len() >= 4 && t.len() <= 7, "{t:?}");
    }
}
