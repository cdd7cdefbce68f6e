//! A hand-written SVG: call-setup times per scenario (one dot per call, p50 bar) and the
//! glass-to-glass latency distribution per scenario (empirical CDF).

use std::fmt::Write;

use crate::measure::{ScenarioResult, percentile};

const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
const W: f64 = 1000.0;
const H: f64 = 420.0;
const PANEL_W: f64 = 420.0;
const TOP: f64 = 50.0;
const PLOT_H: f64 = 300.0;

fn nice_max(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn axis(s: &mut String, x0: f64, title: &str, xlabel: &str, max: f64, horizontal_value: bool) {
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" font-size="15" text-anchor="middle" font-weight="bold">{title}</text>"##,
        x0 + PANEL_W / 2.0,
        TOP - 20.0
    );
    let _ = write!(
        s,
        r##"<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PLOT_H}" fill="none" stroke="#444"/>"##
    );
    for i in 0..=5 {
        let v = max * i as f64 / 5.0;
        if horizontal_value {
            let x = x0 + PANEL_W * i as f64 / 5.0;
            let _ = write!(
                s,
                r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" font-size="11" text-anchor="middle">{v:.0}</text>"##,
                TOP + PLOT_H,
                TOP + PLOT_H + 15.0
            );
        } else {
            let y = TOP + PLOT_H - PLOT_H * i as f64 / 5.0;
            let _ = write!(
                s,
                r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="11" text-anchor="end">{v:.0}</text>"##,
                x0 + PANEL_W,
                x0 - 5.0,
                y + 4.0
            );
        }
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle">{xlabel}</text>"##,
        x0 + PANEL_W / 2.0,
        TOP + PLOT_H + 35.0
    );
}

/// The SVG document.
pub fn svg(results: &[ScenarioResult]) -> String {
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif"><rect width="{W}" height="{H}" fill="white"/>"##
    );
    // Left: call setup, one column per scenario.
    let x0 = 70.0;
    let max_setup =
        nice_max(results.iter().flat_map(|r| r.setup_ms.iter().copied()).fold(0.0, f64::max));
    axis(&mut s, x0, "Call setup → first decoded frame", "", max_setup, false);
    let _ = write!(
        s,
        r##"<text x="20" y="{}" font-size="12" transform="rotate(-90 20 {})" text-anchor="middle">ms</text>"##,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0
    );
    let n = results.len().max(1) as f64;
    for (i, r) in results.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let cx = x0 + PANEL_W * (i as f64 + 0.5) / n;
        for (j, v) in r.setup_ms.iter().enumerate() {
            let jitter = ((j * 37 % 17) as f64 - 8.0) * 2.5;
            let y = TOP + PLOT_H - PLOT_H * v / max_setup;
            let _ = write!(
                s,
                r##"<circle cx="{}" cy="{y:.1}" r="3.5" fill="{color}" fill-opacity="0.6"/>"##,
                cx + jitter
            );
        }
        let p50 = percentile(&r.setup_ms, 0.5);
        if p50.is_finite() {
            let y = TOP + PLOT_H - PLOT_H * p50 / max_setup;
            let _ = write!(
                s,
                r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="black" stroke-width="2"/><text x="{}" y="{:.1}" font-size="11">p50 {p50:.0}</text>"##,
                cx - 30.0,
                cx + 30.0,
                cx + 32.0,
                y + 4.0
            );
        }
        let _ = write!(
            s,
            r##"<text x="{cx}" y="{}" font-size="12" text-anchor="middle" fill="{color}">{}</text>"##,
            TOP + PLOT_H + 15.0,
            r.name
        );
    }
    // Right: glass-to-glass CDF.
    let x0 = 540.0;
    let max_g2g = nice_max(
        results
            .iter()
            .map(|r| percentile(&r.g2g_ms, 0.99))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    axis(&mut s, x0, "Glass-to-glass latency (CDF)", "ms", max_g2g, true);
    for i in 0..=4 {
        let y = TOP + PLOT_H - PLOT_H * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="end">{}%</text>"##,
            x0 - 5.0,
            y + 4.0,
            i * 25
        );
    }
    for (i, r) in results.iter().enumerate() {
        if r.g2g_ms.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let mut v = r.g2g_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let mut points = String::new();
        for (j, ms) in v.iter().enumerate() {
            let x = x0 + PANEL_W * (ms / max_g2g).min(1.0);
            let y = TOP + PLOT_H - PLOT_H * (j + 1) as f64 / v.len() as f64;
            let _ = write!(points, "{x:.1},{y:.1} ");
        }
        let _ = write!(
            s,
            r##"<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/><text x="{}" y="{}" font-size="12" fill="{color}">{} (p50 {:.0} ms)</text>"##,
            x0 + PANEL_W - 150.0,
            TOP + PLOT_H - 60.0 + 16.0 * i as f64,
            r.name,
            percentile(&r.g2g_ms, 0.5)
        );
    }
    s.push_str("</svg>\n");
    s
}
