//! PNG charts for the report, drawn with plotters' bitmap backend. Text is
//! rendered through ab_glyph with a font compiled into the binary (egui's
//! Ubuntu Light), so charts look the same on a machine without any system
//! fonts. This module draws what it is given; it knows nothing of results.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

const SIZE: (u32, u32) = (1100, 620);
const FONT: &str = "sans-serif";

/// One named line.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A vertical line at `x` with a label (a fault).
pub struct Marker {
    pub x: f64,
    pub label: String,
}

fn font() -> Result<()> {
    static REGISTER: Once = Once::new();
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|_| anyhow!("the embedded font did not load"));
    });
    result
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

fn range_max(series: &[Series], pick: impl Fn(&(f64, f64)) -> f64) -> f64 {
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(&pick))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    if max > 0.0 {
        max
    } else {
        1.0
    }
}

/// Latency against percentile, the x axis spaced as log10(100 / (100 - p))
/// and labelled with p, as OMB's charts draw quantiles.
pub fn quantile_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
    max_percentile: f64,
) -> Result<()> {
    let transformed: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s
                .points
                .iter()
                .filter(|(p, _)| *p < 100.0 && *p <= max_percentile)
                .map(|(p, v)| ((100.0 / (100.0 - p)).log10(), *v))
                .collect(),
        })
        .collect();
    let x_max = range_max(&transformed, |p| p.0).ceil().max(1.0);
    // When the runs differ by orders of magnitude a linear axis flattens
    // the faster one: plot log10 of the values and label them back.
    let y_max = range_max(&transformed, |p| p.1);
    let y_min = transformed
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let log_y = y_min.is_finite() && y_max / y_min > 100.0;
    let (transformed, y_range, y_label) = if log_y {
        let floor = y_min.log10().floor();
        let logged = transformed
            .into_iter()
            .map(|s| Series {
                label: s.label,
                points: s
                    .points
                    .into_iter()
                    .map(|(x, y)| (x, y.max(y_min).log10()))
                    .collect(),
            })
            .collect();
        (
            logged,
            floor..(y_max.log10() + 0.2),
            format!("{y_label} (log scale)"),
        )
    } else {
        (transformed, 0.0..y_max * 1.1, y_label.to_string())
    };
    let y_format = move |y: &f64| {
        if log_y {
            let v = 10f64.powf(*y);
            if v >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        } else {
            format!("{y:.1}")
        }
    };
    draw_lines(
        path,
        title,
        ("percentile", &y_label),
        (0.0..x_max, y_range),
        &transformed,
        &[],
        &|x: &f64| {
            let p = 100.0 - 100.0 / 10f64.powf(*x);
            if (p - p.round()).abs() < 1e-6 {
                format!("{p:.0}")
            } else {
                format!("{p:.2}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            }
        },
        &y_format,
        x_max as usize + 1,
        true,
        // Curves rise to the right: the bottom right is free.
        SeriesLabelPosition::LowerRight,
    )
}

/// Values over time (seconds), with faults as labelled vertical lines.
pub fn time_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
    markers: &[Marker],
) -> Result<()> {
    let x_max = range_max(series, |p| p.0)
        .max(markers.iter().map(|m| m.x).fold(0.0, f64::max))
        .max(1.0);
    let y_max = range_max(series, |p| p.1) * 1.15;
    draw_lines(
        path,
        title,
        ("seconds since the measured phase started", y_label),
        (0.0..x_max, 0.0..y_max),
        series,
        markers,
        &|x: &f64| format!("{x:.0}"),
        &|y: &f64| axis_number(*y, y_max),
        10,
        false,
        // Fault labels sit at the top.
        SeriesLabelPosition::LowerRight,
    )
}

/// Points joined by lines (e.g. move time against data size). The top of
/// the y axis is never below `y_at_least`, so that a flat line of small
/// values reads as flat rather than as noise.
pub fn xy_chart(
    path: &Path,
    title: &str,
    labels: (&str, &str),
    series: &[Series],
    y_at_least: f64,
) -> Result<()> {
    let x_max = range_max(series, |p| p.0) * 1.1;
    let y_max = (range_max(series, |p| p.1) * 1.2).max(y_at_least);
    draw_lines(
        path,
        title,
        labels,
        (0.0..x_max, 0.0..y_max),
        series,
        &[],
        &|x: &f64| format!("{x:.2}"),
        &|y: &f64| axis_number(*y, y_max),
        10,
        true,
        SeriesLabelPosition::UpperRight,
    )
}

/// An axis label with as many decimals as the axis's extent needs.
fn axis_number(v: f64, top: f64) -> String {
    match top {
        t if t >= 100.0 => format!("{v:.0}"),
        t if t >= 10.0 => format!("{v:.1}"),
        t if t >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_lines(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    (x_range, y_range): (std::ops::Range<f64>, std::ops::Range<f64>),
    series: &[Series],
    markers: &[Marker],
    x_format: &dyn Fn(&f64) -> String,
    y_format: &dyn Fn(&f64) -> String,
    x_labels: usize,
    points: bool,
    legend: SeriesLabelPosition,
) -> Result<()> {
    font()?;
    let (y_bottom, y_top) = (y_range.start, y_range.end);
    let x_end = x_range.end;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_range)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(x_labels)
        .x_label_formatter(x_format)
        .y_label_formatter(y_format)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_error)?;
    for (i, marker) in markers.iter().enumerate() {
        let color = RGBColor(200, 30, 30);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(marker.x, y_bottom), (marker.x, y_top)],
                color.stroke_width(1),
            )))
            .map_err(plot_error)?;
        // Labels step down so that faults close in time stay readable.
        let step = (y_top - y_bottom) * 0.045 * (i % 6) as f64;
        // Past the middle a label reads leftwards from its line.
        let anchor = if marker.x > 0.55 * x_end {
            Pos::new(HPos::Right, VPos::Top)
        } else {
            Pos::new(HPos::Left, VPos::Top)
        };
        chart
            .draw_series(std::iter::once(Text::new(
                format!(" {} ", marker.label),
                (marker.x, y_top - (y_top - y_bottom) * 0.03 - step),
                (FONT, 15).into_font().color(&color).pos(anchor),
            )))
            .map_err(plot_error)?;
    }
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        if points {
            chart
                .draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(plot_error)?;
        }
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .position(legend)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_keep_small_values_apart() {
        assert_eq!(axis_number(0.12, 0.137), "0.120");
        assert_eq!(axis_number(2000.0, 11_000.0), "2000");
        assert_eq!(axis_number(1.5, 9.0), "1.50");
    }

    /// Text is drawn from the embedded font: a chart with a caption has
    /// dark pixels in its title band even on a machine without fonts.
    #[test]
    fn charts_are_written_with_their_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.png");
        let series = vec![Series {
            label: "decoupled".into(),
            points: vec![
                (50.0, 1.0),
                (90.0, 2.0),
                (99.0, 5.0),
                (99.9, 9.0),
                (100.0, 20.0),
            ],
        }];
        quantile_chart(&path, "Publish latency quantiles", "ms", &series, 99.99).expect("drawn");
        let bytes = std::fs::read(&path).expect("written");
        assert_eq!(&bytes[1..4], b"PNG");
        let t = dir.path().join("t.png");
        time_chart(
            &t,
            "Throughput",
            "msg/s",
            &series,
            &[Marker {
                x: 95.0,
                label: "kill-broker".into(),
            }],
        )
        .expect("drawn");
        xy_chart(
            &dir.path().join("m.png"),
            "Moves",
            ("GB", "s"),
            &series,
            1.0,
        )
        .expect("drawn");
        let img = image_band_dark_pixels(&bytes);
        assert!(
            img > 50,
            "only {img} dark pixels in the title band: no text?"
        );
    }

    /// Counts dark pixels in the top 50 rows of a PNG (the caption).
    fn image_band_dark_pixels(png: &[u8]) -> usize {
        let decoded = image::load_from_memory(png).expect("decodes").to_rgb8();
        decoded
            .enumerate_pixels()
            .filter(|(_, y, p)| *y < 50 && p.0.iter().all(|c| *c < 100))
            .count()
    }
}
