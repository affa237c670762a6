//! Plain SVG bar charts of a bench run, written next to `docs/benchmarks.md`: no plotting
//! library, no fonts to install, readable on GitHub.

use std::fmt::Write as _;

use super::edge::median_by_p99;
use super::report::{targets, Context, Report};
use super::scaling::ScalingPoint;
use crate::loadgen::Latency;

const WIDTH: f64 = 900.0;
const LABEL: f64 = 380.0;
const BAR: f64 = 18.0;
const GAP: f64 = 8.0;

/// A horizontal bar chart: one bar per `(label, value)`, and a dashed line at `marker`.
pub fn bars(title: &str, unit: &str, rows: &[(String, f64)], marker: Option<(f64, &str)>) -> String {
    let max = rows.iter().map(|(_, v)| *v).chain(marker.map(|(m, _)| m)).fold(0.0_f64, f64::max).max(1e-9) * 1.15;
    let plot = WIDTH - LABEL - 20.0;
    let height = 50.0 + rows.len() as f64 * (BAR + GAP) + 20.0;
    let x = |v: f64| LABEL + v / max * plot;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(svg, r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#, escape(title));
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * (BAR + GAP);
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL - 8.0,
            y + BAR * 0.7,
            escape(label)
        );
        let _ = write!(
            svg,
            r##"<rect x="{LABEL}" y="{y}" width="{:.1}" height="{BAR}" fill="#4a78b5"/>"##,
            (x(*value) - LABEL).max(1.0)
        );
        let _ =
            write!(svg, r#"<text x="{:.1}" y="{}">{} {}</text>"#, x(*value) + 4.0, y + BAR * 0.7, short(*value), unit);
    }
    if let Some((m, name)) = marker {
        let bottom = 40.0 + rows.len() as f64 * (BAR + GAP);
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" y1="32" x2="{0:.1}" y2="{bottom}" stroke="#c0392b" stroke-dasharray="4 3"/>"##,
            x(m)
        );
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" fill="#c0392b">{}</text>"##,
            x(m) + 4.0,
            bottom + 14.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The charts of a run, by file name.
pub fn charts(context: &Context, r: &Report) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    // Every ratio target divided by its floor, so that one line at 1.0 marks them all.
    let ratios: Vec<(String, f64)> = targets(context, r)
        .into_iter()
        .filter_map(|t| {
            let floor: f64 = t.target.strip_prefix(">= ")?.parse().ok()?;
            Some((format!("{} (/ {floor})", t.measurement), t.ratio? / floor))
        })
        .collect();
    if !ratios.is_empty() {
        out.push((
            "bench-ratios.svg",
            bars(
                "paystream / peer, same run, divided by the target (1.0 = target)",
                "",
                &ratios,
                Some((1.0, "target")),
            ),
        ));
    }
    let mut latency = Vec::new();
    let mut add = |name: &str, l: &Latency| {
        latency.push((format!("{name} p50"), l.p50_ms));
        latency.push((format!("{name} p99"), l.p99_ms));
    };
    if let Some(l) = &r.relay_latency_at_half_peak {
        add("relay commit to Kafka, half drain rate", l);
    }
    if let Some((_, l)) = &r.relay_sustained {
        add("relay commit to Kafka, half sustained", l);
    }
    if let Some(e) = &r.edge {
        add("ingest HTTP, peak", &e.ingest_latency_at_peak);
        if let Some((_, l)) = &e.ingest_alone_half_peak {
            add("ingest alone, half its peak", l);
        }
        if let Some(l) = median_by_p99(&e.bare_half_peak_turns) {
            add("bare server, same rate", l);
        }
        add("ingest HTTP, half rate", &e.ingest_latency_at_half_peak);
        if let Some(l) = &e.e2e_latency_at_half_peak {
            add("end to end, half rate", l);
        }
        if let Some(l) = e.seed_pipeline.as_ref().and_then(|s| s.run.e2e_at_half.as_ref()) {
            add("seed design end to end, half its rate", l);
        }
    }
    if !latency.is_empty() {
        out.push(("bench-latency.svg", bars("Latency (ms)", "ms", &latency, Some((50.0, "50 ms")))));
    }
    if let Some(points) = &r.scaling {
        out.push(("bench-scaling.svg", bars("Processor payments/s", "/s", &scaling_rows(points), None)));
    }
    out
}

fn scaling_rows(points: &[ScalingPoint]) -> Vec<(String, f64)> {
    points
        .iter()
        .map(|p| (format!("{} member(s), {} installments", p.members, p.installments), p.payments_per_s.unwrap_or(0.0)))
        .collect()
}

fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chart is one SVG with a bar per row, its title escaped.
    #[test]
    fn a_chart_is_one_svg_with_a_bar_per_row() {
        let svg = bars("t <1>", "ms", &[("a".into(), 1.0), ("b".into(), 3.0)], Some((2.0, "target")));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
    }
}
