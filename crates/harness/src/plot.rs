//! The plot: throughput against round trip, one series per side of the `latency`
//! scenario (the engine, the single-request ceiling, the sample client) and the
//! model bound, drawn as SVG with `plotters`.

use anyhow::anyhow;
use plotters::prelude::*;

use crate::results::{Point, Results};

/// The plot's size in pixels.
const SIZE: (u32, u32) = (860, 520);

/// One series: its label, colour, and (round trip ms, MiB/s) points.
struct Series {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// What a series takes from a point.
type Value = Box<dyn Fn(&Point) -> Option<f64>>;

/// The series of the `latency` scenario's points, in a fixed order.
fn series(points: &[Point]) -> Vec<Series> {
    let side = |key: &'static str| {
        move |p: &Point| {
            p.sides
                .iter()
                .find(|s| s.key == key)
                .map(|s| s.summary.whole_mib_s.median)
        }
    };
    let wanted: [(&str, RGBColor, Value); 4] = [
        ("engine, the CLI's defaults", BLUE, Box::new(side("engine"))),
        (
            "one request carrying the whole file",
            BLACK,
            Box::new(side("ceiling")),
        ),
        (
            "sample-client pattern (2 MiB, sequential)",
            RED,
            Box::new(side("sample-client")),
        ),
        (
            "model bound c / (RTT + c/B)",
            RGBColor(0, 140, 0),
            Box::new(|p: &Point| p.model.as_ref().map(|m| m.bound_mib_s)),
        ),
    ];
    let label_of = |key: &str| {
        points
            .iter()
            .find_map(|p| p.sides.iter().find(|s| s.key == key))
            .map(|s| s.label.clone())
    };
    let keys = ["engine", "ceiling", "sample-client", "model"];
    wanted
        .into_iter()
        .zip(keys)
        .map(|((label, color, value), key)| Series {
            label: label_of(key).unwrap_or_else(|| label.to_owned()),
            color,
            points: points
                .iter()
                .filter_map(|p| Some((p.rtt_ms, value(p)?)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// The SVG, or `None` when the run has no `latency` points to plot.
pub(crate) fn svg(results: &Results) -> anyhow::Result<Option<String>> {
    let Some(latency) = results
        .scenarios
        .iter()
        .find(|s| s.name == "latency" && !s.points.is_empty())
    else {
        return Ok(None);
    };
    let series = series(&latency.points);
    if series.is_empty() {
        return Ok(None);
    }
    let all = series.iter().flat_map(|s| s.points.iter());
    let (x_min, x_max, y_max) = all.fold((f64::MAX, 0.0f64, 0.0f64), |(lo, hi, y), p| {
        (lo.min(p.0), hi.max(p.0), y.max(p.1))
    });
    // One round trip (a far end elsewhere: its path's own): in the middle.
    let x_max = match x_max {
        x if x <= 0.0 => 1.0,
        x if x - x_min <= x * 0.01 => x * 2.0,
        x => x * 1.08,
    };
    // Room above the highest point for the legend, at the upper right.
    let y_max = if y_max > 0.0 { y_max * 1.4 } else { 1.0 };
    // Enough decimals that the round trips' ticks (about ten across the
    // axis) differ: 0 for 100 ms, 3 for a LAN's 0.1 ms.
    let x_decimals = ((-(x_max / 10.0).log10()).ceil() as i64 + 1).clamp(0, 6) as usize;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| anyhow!("cannot draw the plot: {e}");
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{} (median of {} per side)", latency.title, results.reps),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(72)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("round trip, ms (measured: an empty call)")
            .y_desc("MiB/s, whole run")
            .x_label_formatter(&|v| format!("{v:.x_decimals$}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .bold_line_style(RGBColor(225, 225, 225))
            .max_light_lines(0)
            .draw()
            .map_err(|e| fail(&e))?;
        for s in &series {
            let style = s.color.stroke_width(2);
            chart
                .draw_series(LineSeries::new(s.points.clone(), style))
                .map_err(|e| fail(&e))?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, s.color.filled())),
                )
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(Some(out))
}
