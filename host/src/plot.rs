//! Learning curves as PNG images, drawn with `plotters`.
//!
//! Invariants:
//! - Every curve image is [`CURVE_WIDTH`]` x `[`CURVE_HEIGHT`] (heatmaps: [`CURVE_WIDTH`] wide,
//!   [`HEAT_PANEL_HEIGHT`] per panel) 8-bit RGB, written atomically (a
//!   temporary file in the same directory, renamed into place) by [`crate::render::write_png`].
//! - Text uses DejaVu Sans embedded in the binary (`host/assets/DejaVuSans.ttf`, licence next
//!   to it), so the output depends on no system font or fontconfig.
//! - Bad data never panics: points with a non-finite value break the line there (they are not
//!   drawn), success rates are clamped to `[0, 1]` and mean returns to `±1e12` for display, and
//!   no points at all still give a valid image: empty axes with a "no data" note.
//! - Points are drawn in order of `frames` (stable, so ties keep their order).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::render::{write_png, Frame};

/// Width of every curve image, in pixels.
pub const CURVE_WIDTH: u32 = 900;
/// Height of every curve image, in pixels.
pub const CURVE_HEIGHT: u32 = 500;

/// One evaluation point of a learning curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Environment frames (steps) seen in training so far.
    pub frames: u64,
    /// Success rate in `[0, 1]`.
    pub success: f64,
    /// Mean episode return.
    pub mean_return: f64,
}

/// The font family name under which the embedded font is registered with `plotters` (the
/// name `plotters` uses for its own default labels too).
const FONT: &str = "sans-serif";

/// DejaVu Sans 2.37 (see `host/assets/DejaVuSans.LICENSE`).
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Line colours for successive series (matplotlib's `tab10`).
const SERIES_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Mean returns are clamped to this range for display, so axis arithmetic stays finite.
const RETURN_BOUNDS: (f64, f64) = (-1e12, 1e12);

/// Series with at most this many points also get a marker on every point (a lone point between
/// gaps always gets one, or it would not show at all).
const MARKER_MAX_POINTS: usize = 60;

/// Register the embedded font with `plotters` once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded DejaVu Sans font could not be loaded"))
    }
}

/// Write the learning curve to `path`: success rate vs frames (left panel) and mean return vs
/// frames (right panel), under `title`. Empty `points` give empty axes with a "no data" note.
pub fn write_curve(path: &Path, title: &str, points: &[CurvePoint]) -> Result<()> {
    let pts = sorted(points);
    let frame = draw(title, |root| {
        let (left, right) = root.split_horizontally(CURVE_WIDTH / 2);
        let x_max = frames_max(pts.iter().copied());
        let color = SERIES_COLORS[0];
        let success = runs(&pts, |p| p.success, (0.0, 1.0));
        panel(
            &left,
            "success rate",
            x_max,
            (0.0, 1.02),
            &[(None, color, success)],
        )?;
        let returns = runs(&pts, |p| p.mean_return, RETURN_BOUNDS);
        let y = value_range(returns.iter().flatten().map(|&(_, y)| y));
        panel(&right, "mean return", x_max, y, &[(None, color, returns)])
    })?;
    write_png(path, &frame)
}

/// Write several labelled learning curves to `path` on one chart: success rate vs frames, one
/// line per series (colours cycle after ten), with a legend. A series with no drawable point
/// still appears in the legend; no series at all gives empty axes with a "no data" note.
pub fn write_curves(path: &Path, title: &str, series: &[(&str, &[CurvePoint])]) -> Result<()> {
    let sorted_series: Vec<(&str, Vec<CurvePoint>)> = series
        .iter()
        .map(|(name, pts)| (*name, sorted(pts)))
        .collect();
    let frame = draw(title, |root| {
        let x_max = frames_max(sorted_series.iter().flat_map(|(_, p)| p.iter().copied()));
        let lines: Vec<Line> = sorted_series
            .iter()
            .enumerate()
            .map(|(i, (name, pts))| {
                let runs = runs(pts, |p| p.success, (0.0, 1.0));
                (Some(*name), SERIES_COLORS[i % SERIES_COLORS.len()], runs)
            })
            .collect();
        panel(root, "success rate", x_max, (0.0, 1.02), &lines)
    })?;
    write_png(path, &frame)
}

/// One point of a curve summarised over seeds: a central line and a band around it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandPoint {
    /// Environment frames.
    pub frames: u64,
    /// The central value (e.g. the median success rate over seeds).
    pub mid: f64,
    /// Lower edge of the band (e.g. the minimum over seeds).
    pub lo: f64,
    /// Upper edge of the band (e.g. the maximum over seeds).
    pub hi: f64,
}

/// A labelled curve with a band, for [`write_banded_curves`].
#[derive(Clone, Debug, PartialEq)]
pub struct BandSeries {
    /// Legend label.
    pub label: String,
    /// Points (any order; drawn by frames).
    pub points: Vec<BandPoint>,
}

/// Write several labelled success curves with shaded bands to `path`: for each series, the
/// band `lo..hi` filled in a light shade of its colour and the `mid` line over it (colours
/// cycle after ten), with a legend; `y_desc` names the y axis (values clamped to `[0, 1]`).
/// Points with a non-finite value are left out of the band and break the line. No drawable
/// point gives empty axes with a "no data" note.
pub fn write_banded_curves(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[BandSeries],
) -> Result<()> {
    let sorted_series: Vec<(&str, Vec<BandPoint>)> = series
        .iter()
        .map(|s| {
            let mut v = s.points.clone();
            v.sort_by_key(|p| p.frames);
            (s.label.as_str(), v)
        })
        .collect();
    let frame = draw(title, |root| {
        let x_max = sorted_series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.frames))
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..1.02)?;
        chart
            .configure_mesh()
            .x_desc("frames")
            .y_desc(y_desc)
            .x_label_formatter(&|v| format_frames(*v))
            .y_label_formatter(&|v| format_value(*v, 1.02))
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 13))
            .draw()?;
        let mut any = false;
        for (i, (label, pts)) in sorted_series.iter().enumerate() {
            let color = SERIES_COLORS[i % SERIES_COLORS.len()];
            let band: Vec<(f64, f64, f64)> = pts
                .iter()
                .filter(|p| p.lo.is_finite() && p.hi.is_finite())
                .map(|p| (p.frames as f64, p.lo.clamp(0.0, 1.0), p.hi.clamp(0.0, 1.0)))
                .collect();
            if band.len() >= 2 {
                let mut poly: Vec<(f64, f64)> = band.iter().map(|&(x, _, hi)| (x, hi)).collect();
                poly.extend(band.iter().rev().map(|&(x, lo, _)| (x, lo)));
                chart.draw_series(std::iter::once(Polygon::new(
                    poly,
                    color.mix(0.18).filled(),
                )))?;
            }
            let mids: Vec<CurvePoint> = pts
                .iter()
                .map(|p| CurvePoint {
                    frames: p.frames,
                    success: p.mid,
                    mean_return: 0.0,
                })
                .collect();
            let style = ShapeStyle::from(color).stroke_width(2);
            let lines = runs(&mids, |p| p.success, (0.0, 1.0));
            let markers = lines.iter().map(Vec::len).sum::<usize>() <= MARKER_MAX_POINTS;
            for run in &lines {
                any = true;
                chart.draw_series(LineSeries::new(run.iter().copied(), style))?;
                if markers || run.len() == 1 {
                    chart.draw_series(run.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
                }
            }
            chart
                .draw_series(LineSeries::new(std::iter::empty(), style))?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        if !sorted_series.is_empty() {
            draw_legend(&mut chart)?;
        }
        if !any {
            let note = (FONT, 18)
                .into_font()
                .color(&RGBColor(120, 120, 120))
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .plotting_area()
                .draw(&Text::new("no data", (x_max / 2.0, 0.51), note))?;
        }
        Ok(())
    })?;
    write_png(path, &frame)
}

/// The x axis of a heatmap panel.
#[derive(Clone, Debug, PartialEq)]
pub enum HeatAxis {
    /// Columns are frame intervals; `edges` holds the `cols + 1` boundaries, ascending.
    Frames(Vec<u64>),
    /// Columns are categories (e.g. levels), one label each.
    Labels(Vec<String>),
}

/// One heatmap: `rows x cols` values in `[0, 1]`, row-major (NaN: no data, drawn grey).
#[derive(Clone, Debug, PartialEq)]
pub struct HeatPanel {
    /// Panel caption.
    pub title: String,
    /// Label of each row (e.g. `m0`, `m1`, ...).
    pub row_labels: Vec<String>,
    /// The x axis (determines the column count).
    pub axis: HeatAxis,
    /// `row_labels.len() * cols` values, row-major.
    pub values: Vec<f64>,
}

impl HeatPanel {
    fn cols(&self) -> usize {
        match &self.axis {
            HeatAxis::Frames(edges) => edges.len().saturating_sub(1),
            HeatAxis::Labels(l) => l.len(),
        }
    }
}

/// Height in pixels of one heatmap panel in [`write_heatmaps`].
pub const HEAT_PANEL_HEIGHT: u32 = 150;

/// Write heatmaps stacked vertically to `path` under `title`: each panel draws its values from
/// white (0) to dark blue (1), NaN in grey. The image is [`CURVE_WIDTH`] wide and
/// `60 + HEAT_PANEL_HEIGHT` pixels per panel high. A panel whose values do not fill its rows x
/// columns is an error naming it.
pub fn write_heatmaps(path: &Path, title: &str, panels: &[HeatPanel]) -> Result<()> {
    for p in panels {
        if p.values.len() != p.row_labels.len() * p.cols() {
            return Err(anyhow!(
                "heatmap panel {:?}: {} values for {} rows x {} columns",
                p.title,
                p.values.len(),
                p.row_labels.len(),
                p.cols()
            ));
        }
    }
    let height = 60 + HEAT_PANEL_HEIGHT * panels.len().max(1) as u32;
    let frame = draw_sized(title, CURVE_WIDTH, height, |root| {
        if panels.is_empty() {
            let note = (FONT, 18)
                .into_font()
                .color(&RGBColor(120, 120, 120))
                .pos(Pos::new(HPos::Center, VPos::Center));
            let (w, h) = root.dim_in_pixel();
            root.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), note))?;
            return Ok(());
        }
        let areas = root.split_evenly((panels.len(), 1));
        for (area, panel) in areas.iter().zip(panels) {
            heat_panel(area, panel)?;
        }
        Ok(())
    })?;
    write_png(path, &frame)
}

/// White (0) to dark blue (1); grey for NaN.
fn heat_color(v: f64) -> RGBColor {
    if !v.is_finite() {
        return RGBColor(200, 200, 200);
    }
    let t = v.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

fn heat_panel(area: &DrawingArea<BitMapBackend, Shift>, panel: &HeatPanel) -> Result<()> {
    let rows = panel.row_labels.len().max(1);
    let cols = panel.cols();
    let x_edges: Vec<f64> = match &panel.axis {
        HeatAxis::Frames(e) => e.iter().map(|&f| f as f64).collect(),
        HeatAxis::Labels(l) => (0..=l.len()).map(|i| i as f64).collect(),
    };
    let x0 = x_edges.first().copied().unwrap_or(0.0);
    let x1 = x_edges.last().copied().unwrap_or(1.0).max(x0 + 1.0);
    let labels: Vec<String> = match &panel.axis {
        HeatAxis::Labels(l) => l.clone(),
        HeatAxis::Frames(_) => Vec::new(),
    };
    let row_labels = panel.row_labels.clone();
    let is_frames = matches!(panel.axis, HeatAxis::Frames(_));
    let mut chart = ChartBuilder::on(area)
        .margin(6)
        .caption(&panel.title, (FONT, 15))
        .x_label_area_size(26)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, 0.0..rows as f64)?;
    let x_fmt = move |v: &f64| -> String {
        if is_frames {
            format_frames(*v)
        } else {
            let i = v.floor();
            if (v - i - 0.5).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
    };
    let y_fmt = move |v: &f64| -> String {
        let i = v.floor();
        if (v - i - 0.5).abs() < 1e-6 && i >= 0.0 {
            row_labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_mesh()
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 12))
        .y_labels(2 * rows + 1);
    if !is_frames {
        mesh.x_labels(2 * cols + 1);
    }
    mesh.draw()?;
    let mut cells = Vec::with_capacity(rows * cols);
    for r in 0..panel.row_labels.len() {
        for c in 0..cols {
            let v = panel.values[r * cols + c];
            cells.push(Rectangle::new(
                [(x_edges[c], r as f64), (x_edges[c + 1], r as f64 + 1.0)],
                heat_color(v).filled(),
            ));
        }
    }
    chart.draw_series(cells)?;
    Ok(())
}

/// A series to draw: legend label, colour, and its runs of finite points.
type Line<'a> = (Option<&'a str>, RGBColor, Vec<Vec<(f64, f64)>>);

/// `points` ordered by frames (stable).
fn sorted(points: &[CurvePoint]) -> Vec<CurvePoint> {
    let mut v = points.to_vec();
    v.sort_by_key(|p| p.frames);
    v
}

/// The points `(frames, y(p))` split into maximal runs of finite values, each value clamped
/// to `bounds` for display.
fn runs(
    points: &[CurvePoint],
    y: impl Fn(&CurvePoint) -> f64,
    bounds: (f64, f64),
) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur = Vec::new();
    for p in points {
        let v = y(p);
        if v.is_finite() {
            cur.push((p.frames as f64, v.clamp(bounds.0, bounds.1)));
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Right end of the frames axis: the largest frame count, at least 1.
fn frames_max(points: impl Iterator<Item = CurvePoint>) -> f64 {
    points.map(|p| p.frames).max().unwrap_or(0).max(1) as f64
}

/// A y range that includes 0 and every value, with a little headroom; `(0, 1)` for no values.
fn value_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    let mut any = false;
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
        any = true;
    }
    if !any || hi - lo < 1e-9 {
        return (lo, lo + 1.0);
    }
    let pad = 0.05 * (hi - lo);
    (if lo < 0.0 { lo - pad } else { lo }, hi + pad)
}

/// `1.5M`, `250k`, `42`: a frame count for an axis label.
fn format_frames(v: f64) -> String {
    let a = v.abs();
    let (div, suffix) = if a >= 1e9 {
        (1e9, "B")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let s = format!("{:.2}", v / div);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}

/// A y-axis label for `v` on an axis spanning `span`: enough decimals for the ticks, no
/// trailing zeros, and never `-0`.
fn format_value(v: f64, span: f64) -> String {
    let decimals = if span > 0.0 && span.is_finite() {
        ((-span.log10()).ceil() + 1.0).clamp(0.0, 6.0) as usize
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Draw a `CURVE_WIDTH x CURVE_HEIGHT` white image with `title` on top, the rest drawn by
/// `body`.
/// The series' legend, in the lower right corner (where learning curves leave room).
fn draw_legend<'a>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

fn draw(
    title: &str,
    body: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<Frame> {
    draw_sized(title, CURVE_WIDTH, CURVE_HEIGHT, body)
}

/// [`draw`] at `width x height`.
fn draw_sized(
    title: &str,
    width: u32,
    height: u32,
    body: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<Frame> {
    ensure_font()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let inner = root.titled(title, (FONT, 24).into_font())?;
        body(&inner)?;
        root.present()?;
    }
    Ok(Frame { width, height, rgb })
}

/// One chart in `area`: `lines` against frames `0..x_max`, y in `y`; a legend when any line is
/// labelled, a "no data" note when nothing is drawable.
fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    y_desc: &str,
    x_max: f64,
    y: (f64, f64),
    lines: &[Line],
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_desc("frames")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format_frames(*v))
        .y_label_formatter(&|v| format_value(*v, y.1 - y.0))
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 13))
        .draw()?;
    let mut labelled = false;
    for (label, color, runs) in lines {
        let style = ShapeStyle::from(color).stroke_width(2);
        let markers = runs.iter().map(Vec::len).sum::<usize>() <= MARKER_MAX_POINTS;
        for run in runs {
            chart.draw_series(LineSeries::new(run.iter().copied(), style))?;
            if markers || run.len() == 1 {
                let dots = run.iter().map(|&p| Circle::new(p, 3, color.filled()));
                chart.draw_series(dots)?;
            }
        }
        if let Some(label) = label {
            // An empty series carries the legend entry, so it shows even without points.
            let color = *color;
            chart
                .draw_series(LineSeries::new(std::iter::empty(), style))?
                .label(*label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            labelled = true;
        }
    }
    if labelled {
        draw_legend(&mut chart)?;
    }
    if lines.iter().all(|(_, _, runs)| runs.is_empty()) {
        let note = (FONT, 18)
            .into_font()
            .color(&RGBColor(120, 120, 120))
            .pos(Pos::new(HPos::Center, VPos::Center));
        let centre = (x_max / 2.0, (y.0 + y.1) / 2.0);
        chart
            .plotting_area()
            .draw(&Text::new("no data", centre, note))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_labels_read_well() {
        assert_eq!(format_frames(0.0), "0");
        assert_eq!(format_frames(950.0), "950");
        assert_eq!(format_frames(250_000.0), "250k");
        assert_eq!(format_frames(1_500_000.0), "1.5M");
        assert_eq!(format_frames(2e9), "2B");
    }

    #[test]
    fn value_labels_read_well() {
        assert_eq!(format_value(-1e-17, 0.11), "0");
        assert_eq!(format_value(-0.05, 0.11), "-0.05");
        assert_eq!(format_value(1.0, 1.02), "1");
        assert_eq!(format_value(0.3, 1.02), "0.3");
        assert_eq!(format_value(1500.0, 3000.0), "1500");
        assert_eq!(format_value(0.5, f64::NAN), "0.5");
    }

    #[test]
    fn runs_break_at_non_finite_values() {
        let p = |frames, success| CurvePoint {
            frames,
            success,
            mean_return: 0.0,
        };
        let pts = [
            p(1, 0.1),
            p(2, f64::NAN),
            p(3, 0.3),
            p(4, 0.4),
            p(5, f64::INFINITY),
        ];
        let r = runs(&pts, |p| p.success, (0.0, 1.0));
        assert_eq!(r, vec![vec![(1.0, 0.1)], vec![(3.0, 0.3), (4.0, 0.4)]]);
    }

    #[test]
    fn value_ranges_are_finite_and_non_empty() {
        assert_eq!(value_range([].into_iter()), (0.0, 1.0));
        assert_eq!(value_range([f64::NAN].into_iter()), (0.0, 1.0));
        assert_eq!(value_range([0.0, 0.0].into_iter()), (0.0, 1.0));
        let (lo, hi) = value_range([-2.0, 3.0].into_iter());
        assert!(lo < -2.0 && hi > 3.0);
        let (lo, hi) = value_range([0.5, 0.9].into_iter());
        assert!(lo == 0.0 && hi > 0.9);
    }
}
