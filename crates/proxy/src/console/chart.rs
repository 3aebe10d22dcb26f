//! Server-rendered SVG stacked bar charts (presentation attributes only: no inline styles or
//! scripts, so the console's content security policy holds).

use std::fmt::Write as _;

use super::html::esc;

/// Fixed palette; series beyond it reuse colours.
const COLOURS: [&str; 8] = [
    "#2f6f4f", "#b3402a", "#d08c1b", "#3a5fa8", "#7a4ea3", "#4a8c99", "#8a6d3b", "#777777",
];

/// One stacked series: a name and a value per bucket.
pub struct Series {
    pub name: String,
    pub values: Vec<u64>,
}

/// A stacked bar chart with one bar per bucket, x labels under some bars, and a legend.
pub fn stacked_bars(title: &str, labels: &[String], series: &[Series]) -> String {
    let (width, height, left, bottom, top) = (760.0_f64, 240.0_f64, 48.0, 36.0, 12.0);
    let n = labels.len().max(1);
    let totals: Vec<u64> = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let plot_w = width - left - 8.0;
    let plot_h = height - bottom - top;
    let slot = plot_w / n as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    // Axis and three gridlines with their values.
    for step in 0..=3u64 {
        let value = max * step / 3;
        let y = top + plot_h - plot_h * value as f64 / max as f64;
        let _ = write!(
            out,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#555\">{value}</text>",
            width - 8.0,
            left - 4.0,
            y + 3.0
        );
    }
    for (i, label) in labels.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = top + plot_h;
        for (k, s) in series.iter().enumerate() {
            let v = s.values.get(i).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let h = plot_h * v as f64 / max as f64;
            y -= h;
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{} · {}: {v}</title></rect>",
                COLOURS[k % COLOURS.len()],
                esc(label),
                esc(&s.name)
            );
        }
        let every = n.div_ceil(8).max(1);
        if i % every == 0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
                x + bar / 2.0,
                height - bottom + 14.0,
                esc(label)
            );
        }
    }
    out.push_str("</svg><ul class=\"legend\">");
    for (k, s) in series.iter().enumerate() {
        let total: u64 = s.values.iter().sum();
        let _ = write!(
            out,
            "<li><svg width=\"10\" height=\"10\" aria-hidden=\"true\"><rect width=\"10\" height=\"10\" fill=\"{}\"/></svg> {} ({total})</li>",
            COLOURS[k % COLOURS.len()],
            esc(&s.name)
        );
    }
    out.push_str("</ul></figure>");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn bars_stack_and_names_are_escaped() {
        let svg = stacked_bars(
            "Requests",
            &["10:00".into(), "11:00".into()],
            &[
                Series {
                    name: "allow".into(),
                    values: vec![3, 0],
                },
                Series {
                    name: "<deny>".into(),
                    values: vec![1, 4],
                },
            ],
        );
        assert_eq!(svg.matches("<rect x=").count(), 3);
        assert!(svg.contains("&lt;deny&gt; (5)"));
        assert!(!svg.contains("<deny>"));
        assert!(!svg.contains("style="));
    }
}
