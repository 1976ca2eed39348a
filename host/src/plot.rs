//! Learning curves and heatmaps as PNG images, drawn with `plotters`.
//!
//! Invariants:
//! - Every curve image is [`CURVE_WIDTH`]` x `[`CURVE_HEIGHT`] (heatmaps: [`CURVE_WIDTH`] wide,
//!   [`HEAT_PANEL_HEIGHT`] per panel) 8-bit RGB, written atomically (a
//!   temporary file in the same directory, renamed into place) by [`crate::render::write_png`].
//! - Text uses DejaVu Sans embedded in the binary (`host/assets/DejaVuSans.ttf`, licence next
//!   to it), so the output depends on no system font or fontconfig.
//! - Data never leaves its plotting area: lines and markers are rasterised here, pixel by
//!   pixel, and every pixel outside the area is dropped (plotters clips no element to its
//!   plotting area, and draws lines wider than one pixel as polygons whose joins can reach far
//!   past their points, e.g. through the title). Axis ranges get a margin at both ends so the
//!   first and last points, with their markers, lie wholly inside.
//! - Charts with several series give each its own colour, marker and dash pattern, and put the
//!   legend in a column beside the plotting area, so the legend hides no data and series with
//!   equal values stay distinguishable.
//! - Bad data never panics: points with a non-finite value break the line there (they are not
//!   drawn), success rates are clamped to `[0, 1]` and mean returns to `±1e12` for display, and
//!   no points at all still give a valid image: empty axes with a "no data" note.
//! - Points are drawn in order of `frames` (stable, so ties keep their order).

use std::ops::Range;
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

/// Grey of "no data" notes.
const NOTE_COLOR: RGBColor = RGBColor(120, 120, 120);

/// Mean returns are clamped to this range for display, so axis arithmetic stays finite.
const RETURN_BOUNDS: (f64, f64) = (-1e12, 1e12);

/// Series with at most this many points get a marker on every point (a lone point between
/// gaps always gets one, or it would not show at all).
const MARKER_MAX_POINTS: usize = 60;

/// Longer series get about this many markers, spread evenly over their frames, so that a
/// series drawn under another with the same values still shows its markers.
const MARKERS_PER_SERIES: usize = 12;

/// Width in pixels of the legend column beside a chart with several series.
pub const LEGEND_WIDTH: u32 = 200;

/// Fraction of an axis span added at each end, so a thick line or a marker on the first or
/// last point stays inside the plotting area instead of being cut at its edge.
const AXIS_MARGIN: f64 = 0.025;

/// Title font size, shrunk (down to [`TITLE_MIN_SIZE`]) when a title is wider than the image.
const TITLE_SIZE: u32 = 24;
/// Smallest title font size.
const TITLE_MIN_SIZE: u32 = 12;

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

/// The y-axis names of a learning curve's two panels: the success rate and the mean return
/// over the last `window` episodes (the trainer's `stats_window`) when it is known.
fn curve_y_descs(window: Option<usize>) -> (String, String) {
    match window {
        Some(n) => (
            format!("success rate (last {n} episodes)"),
            format!("mean return (last {n} episodes)"),
        ),
        None => ("success rate".into(), "mean return".into()),
    }
}

/// Write the learning curve to `path`: success rate vs frames (left panel) and mean return vs
/// frames (right panel), under `title`. `window` is the number of episodes each point's rolling
/// statistics cover (named on the y axes when given). Empty `points` give empty axes with a
/// "no data" note.
pub fn write_curve(
    path: &Path,
    title: &str,
    window: Option<usize>,
    points: &[CurvePoint],
) -> Result<()> {
    let (frame, _) = render_curve(title, window, points)?;
    write_png(path, &frame)
}

/// [`write_curve`]'s image and the pixel rectangles of its plotting areas.
fn render_curve(
    title: &str,
    window: Option<usize>,
    points: &[CurvePoint],
) -> Result<(Frame, Vec<PixelRect>)> {
    let pts = sorted(points);
    let (success_desc, return_desc) = curve_y_descs(window);
    draw(title, |root| {
        let (left, right) = root.split_horizontally(CURVE_WIDTH / 2);
        let x_max = frames_max(pts.iter().copied());
        let style = series_style(0);
        let success = runs(&pts, |p| p.success, (0.0, 1.0));
        let a = panel(
            &left,
            &success_desc,
            x_max,
            (0.0, 1.0),
            &[Line {
                label: None,
                style,
                runs: success,
                spread_markers: false,
            }],
        )?;
        let returns = runs(&pts, |p| p.mean_return, RETURN_BOUNDS);
        let y = value_range(returns.iter().flatten().map(|&(_, y)| y));
        let b = panel(
            &right,
            &return_desc,
            x_max,
            y,
            &[Line {
                label: None,
                style,
                runs: returns,
                spread_markers: false,
            }],
        )?;
        Ok(vec![a, b])
    })
}

/// Write several labelled learning curves to `path` on one chart: success rate vs frames, one
/// line per series, each with its own colour, marker and dash pattern (colours cycle after
/// ten), and a legend beside the chart. A series with no drawable point still appears in the
/// legend; no series at all gives empty axes with a "no data" note.
pub fn write_curves(path: &Path, title: &str, series: &[(&str, &[CurvePoint])]) -> Result<()> {
    let sorted_series: Vec<(&str, Vec<CurvePoint>)> = series
        .iter()
        .map(|(name, pts)| (*name, sorted(pts)))
        .collect();
    let (frame, _) = draw(title, |root| {
        let (plot, legend) = root.split_horizontally(CURVE_WIDTH - LEGEND_WIDTH);
        let x_max = frames_max(sorted_series.iter().flat_map(|(_, p)| p.iter().copied()));
        let lines: Vec<Line> = sorted_series
            .iter()
            .enumerate()
            .map(|(i, (name, pts))| Line {
                label: Some(*name),
                style: series_style(i),
                runs: runs(pts, |p| p.success, (0.0, 1.0)),
                spread_markers: true,
            })
            .collect();
        let rect = panel(&plot, "success rate", x_max, (0.0, 1.0), &lines)?;
        draw_legend(&legend, rect.y.start, &lines, None)?;
        Ok(vec![rect])
    })?;
    write_png(path, &frame)
}

/// One point of a curve summarised over seeds: a central line and a band around it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandPoint {
    /// Environment frames.
    pub frames: u64,
    /// The central value (e.g. the interquartile mean of the success rates over seeds).
    pub mid: f64,
    /// Lower edge of the band (e.g. the lower end of the bootstrap interval of `mid`).
    pub lo: f64,
    /// Upper edge of the band (e.g. the upper end of the bootstrap interval of `mid`).
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
/// band `lo..hi` filled in a light shade of its colour and the `mid` line over it, each series
/// with its own colour, marker and dash pattern (colours cycle after ten); `y_desc` names the y
/// axis (values clamped to `[0, 1]`). The legend, beside the chart, ends with `band_desc`, what
/// the lines and bands are (e.g. "line: IQM over 3 seeds; band: its bootstrap 95% interval";
/// nothing when empty). Points with a non-finite value are left out of the band and break the
/// line. No drawable point gives empty axes with a "no data" note.
pub fn write_banded_curves(
    path: &Path,
    title: &str,
    y_desc: &str,
    band_desc: &str,
    series: &[BandSeries],
) -> Result<()> {
    let (frame, _) = render_banded(title, y_desc, band_desc, series)?;
    write_png(path, &frame)
}

/// [`write_banded_curves`]'s image and the pixel rectangle of its plotting area.
fn render_banded(
    title: &str,
    y_desc: &str,
    band_desc: &str,
    series: &[BandSeries],
) -> Result<(Frame, Vec<PixelRect>)> {
    let sorted_series: Vec<(&str, Vec<BandPoint>)> = series
        .iter()
        .map(|s| {
            let mut v = s.points.clone();
            v.sort_by_key(|p| p.frames);
            (s.label.as_str(), v)
        })
        .collect();
    draw(title, |root| {
        let (plot, legend) = root.split_horizontally(CURVE_WIDTH - LEGEND_WIDTH);
        let x_max = sorted_series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.frames))
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let mut chart = axes(&plot, y_desc, x_max, (0.0, 1.0))?;
        let lines: Vec<Line> = sorted_series
            .iter()
            .enumerate()
            .map(|(i, (label, pts))| {
                let mids: Vec<CurvePoint> = pts
                    .iter()
                    .map(|p| CurvePoint {
                        frames: p.frames,
                        success: p.mid,
                        mean_return: 0.0,
                    })
                    .collect();
                Line {
                    label: Some(*label),
                    style: series_style(i),
                    runs: runs(&mids, |p| p.success, (0.0, 1.0)),
                    spread_markers: true,
                }
            })
            .collect();
        // Every band first, then every line over them, so no band hides another series' line.
        for (i, (_, pts)) in sorted_series.iter().enumerate() {
            let color = series_style(i).color;
            let band: Vec<(f64, f64, f64)> = pts
                .iter()
                .filter(|p| p.lo.is_finite() && p.hi.is_finite())
                .map(|p| (p.frames as f64, p.lo.clamp(0.0, 1.0), p.hi.clamp(0.0, 1.0)))
                .collect();
            if band.len() >= 2 {
                // All vertices lie inside the axis ranges, so the filled polygon does too.
                let mut poly: Vec<(f64, f64)> = band.iter().map(|&(x, _, hi)| (x, hi)).collect();
                poly.extend(band.iter().rev().map(|&(x, lo, _)| (x, lo)));
                chart.draw_series(std::iter::once(Polygon::new(
                    poly,
                    color.mix(0.18).filled(),
                )))?;
            }
        }
        let rect = draw_lines(&chart, &lines)?;
        if lines.iter().all(|l| l.runs.is_empty()) {
            no_data_note(&chart, x_max, (0.0, 1.0))?;
        }
        let band_desc = (!band_desc.is_empty()).then_some(band_desc);
        if !lines.is_empty() || band_desc.is_some() {
            draw_legend(&legend, rect.y.start, &lines, band_desc)?;
        }
        Ok(vec![rect])
    })
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

/// The names on a heatmap figure: its axes (shared by every panel) and its colour scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeatLabels<'a> {
    /// The x axis, under every panel (e.g. "frames" or "level").
    pub x: &'a str,
    /// The y axis, beside every panel (e.g. "module").
    pub y: &'a str,
    /// What the colours mean, beside the colour bar (e.g. "fraction of steps active").
    pub scale: &'a str,
}

/// Height in pixels of one heatmap panel in [`write_heatmaps`].
pub const HEAT_PANEL_HEIGHT: u32 = 180;

/// Width in pixels of the colour-bar column at the right of a heatmap figure.
pub const COLORBAR_WIDTH: u32 = 120;

/// Write heatmaps stacked vertically to `path` under `title`: each panel draws its values from
/// white (0) to dark blue (1), NaN in grey, with `labels.x` under it and `labels.y` beside it;
/// a colour bar at the right gives the scale (`labels.scale`, ticks from 0 to 1, and a grey
/// "no data" swatch when some value is NaN). The image is [`CURVE_WIDTH`] wide and
/// `60 + HEAT_PANEL_HEIGHT` pixels per panel high. A panel whose values do not fill its rows x
/// columns is an error naming it.
pub fn write_heatmaps(
    path: &Path,
    title: &str,
    labels: &HeatLabels,
    panels: &[HeatPanel],
) -> Result<()> {
    let (frame, _) = render_heatmaps(title, labels, panels)?;
    write_png(path, &frame)
}

/// [`write_heatmaps`]'s image and the pixel rectangle of each panel's plotting area and of the
/// colour bar.
fn render_heatmaps(
    title: &str,
    labels: &HeatLabels,
    panels: &[HeatPanel],
) -> Result<(Frame, Vec<PixelRect>)> {
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
    draw_sized(title, CURVE_WIDTH, height, |root| {
        if panels.is_empty() {
            let note = (FONT, 18)
                .into_font()
                .color(&NOTE_COLOR)
                .pos(Pos::new(HPos::Center, VPos::Center));
            let (w, h) = root.dim_in_pixel();
            root.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), note))?;
            return Ok(Vec::new());
        }
        let (body, bar) = root.split_horizontally(CURVE_WIDTH - COLORBAR_WIDTH);
        let areas = body.split_evenly((panels.len(), 1));
        let mut rects = Vec::with_capacity(panels.len() + 1);
        for (area, panel) in areas.iter().zip(panels) {
            rects.push(heat_panel(area, panel, labels)?);
        }
        let top = rects.first().map_or(0, |r| r.y.start);
        let bottom = rects.last().map_or(0, |r| r.y.end);
        let no_data = panels
            .iter()
            .any(|p| p.values.iter().any(|v| !v.is_finite()));
        rects.push(color_bar(&bar, top..bottom, labels.scale, no_data)?);
        Ok(rects)
    })
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

/// One heatmap panel in `area`; returns its plotting area.
fn heat_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    panel: &HeatPanel,
    labels: &HeatLabels,
) -> Result<PixelRect> {
    let rows = panel.row_labels.len().max(1);
    let cols = panel.cols();
    let x_edges: Vec<f64> = match &panel.axis {
        HeatAxis::Frames(e) => e.iter().map(|&f| f as f64).collect(),
        HeatAxis::Labels(l) => (0..=l.len()).map(|i| i as f64).collect(),
    };
    let x0 = x_edges.first().copied().unwrap_or(0.0);
    let x1 = x_edges.last().copied().unwrap_or(1.0).max(x0 + 1.0);
    let col_labels: Vec<String> = match &panel.axis {
        HeatAxis::Labels(l) => l.clone(),
        HeatAxis::Frames(_) => Vec::new(),
    };
    let row_labels = panel.row_labels.clone();
    let is_frames = matches!(panel.axis, HeatAxis::Frames(_));
    let mut chart = ChartBuilder::on(area)
        .margin(6)
        .caption(&panel.title, (FONT, 15))
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, 0.0..rows as f64)?;
    let x_fmt = move |v: &f64| -> String {
        if is_frames {
            format_frames(*v)
        } else {
            let i = v.floor();
            if (v - i - 0.5).abs() < 1e-6 && i >= 0.0 {
                col_labels.get(i as usize).cloned().unwrap_or_default()
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
        .x_desc(labels.x)
        .y_desc(labels.y)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_desc_style((FONT, 13))
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
    Ok(plot_rect(&chart))
}

/// The colour bar in `area` (the column right of the panels), spanning the rows `span` of the
/// image: the scale from 0 (bottom) to 1 (top) with ticks every 0.25, `desc` rotated beside
/// it, and a grey "no data" swatch under it when `no_data`. Returns the bar's rectangle.
fn color_bar(
    area: &DrawingArea<BitMapBackend, Shift>,
    span: Range<i32>,
    desc: &str,
    no_data: bool,
) -> Result<PixelRect> {
    let screen = area.use_screen_coord();
    let (ax, _) = area.get_pixel_range();
    let x0 = ax.start + 8;
    let x1 = x0 + 18;
    // Leave room under the bar for the swatch when it is needed.
    let swatch = if no_data { 26 } else { 0 };
    let (top, bottom) = (span.start, (span.end - swatch).max(span.start + 20));
    let h = (bottom - top).max(1);
    for y in top..bottom {
        let v = f64::from(bottom - 1 - y) / f64::from((h - 1).max(1));
        screen.draw(&Rectangle::new(
            [(x0, y), (x1, y + 1)],
            heat_color(v).filled(),
        ))?;
    }
    screen.draw(&Rectangle::new([(x0, top), (x1, bottom)], BLACK))?;
    let tick_font = (FONT, 12)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for k in 0..=4 {
        let v = f64::from(k) / 4.0;
        let y = bottom - 1 - (v * f64::from(h - 1)).round() as i32;
        screen.draw(&PathElement::new(vec![(x1, y), (x1 + 4, y)], BLACK))?;
        screen.draw(&Text::new(format!("{v}"), (x1 + 7, y), tick_font.clone()))?;
    }
    let desc_font = (FONT, 13)
        .into_font()
        .transform(FontTransform::Rotate270)
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    screen.draw(&Text::new(
        desc.to_string(),
        (x1 + 56, (top + bottom) / 2),
        desc_font,
    ))?;
    if no_data {
        let y = bottom + 10;
        screen.draw(&Rectangle::new(
            [(x0, y), (x1, y + 12)],
            heat_color(f64::NAN).filled(),
        ))?;
        let font = (FONT, 12)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        screen.draw(&Text::new("no data", (x1 + 7, y + 6), font))?;
    }
    Ok(PixelRect {
        x: x0..x1 + 1,
        y: top..bottom + 1,
    })
}

/// A rectangle of image pixels: columns `x`, rows `y` (half-open).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PixelRect {
    x: Range<i32>,
    y: Range<i32>,
}

impl PixelRect {
    fn contains(&self, (x, y): (i32, i32)) -> bool {
        self.x.contains(&x) && self.y.contains(&y)
    }
}

/// A chart with `f64` axes.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The pixels of `chart`'s plotting area.
fn plot_rect(chart: &Chart) -> PixelRect {
    let (x, y) = chart.plotting_area().get_pixel_range();
    PixelRect { x, y }
}

/// The marker shape of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
}

/// The dash pattern of a series' line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stroke {
    Solid,
    Dashed,
    Dotted,
    DashDot,
}

impl Stroke {
    /// Whether the line is drawn `s` pixels along it (measured from the start of its run).
    fn on(self, s: f64) -> bool {
        // (period, on-intervals) in pixels.
        let (period, on): (f64, &[(f64, f64)]) = match self {
            Stroke::Solid => return true,
            Stroke::Dashed => (16.0, &[(0.0, 10.0)]),
            Stroke::Dotted => (7.0, &[(0.0, 3.0)]),
            Stroke::DashDot => (22.0, &[(0.0, 10.0), (14.0, 17.0)]),
        };
        let t = s.rem_euclid(period);
        on.iter().any(|&(a, b)| t >= a && t < b)
    }
}

/// How one series is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SeriesStyle {
    color: RGBColor,
    marker: Marker,
    stroke: Stroke,
    /// Where along the series its markers start, as a fraction of their spacing: series differ,
    /// so markers of series with equal values do not land on one another.
    phase: f64,
}

/// The style of series `i`: colour, marker and dash each cycle on their own (10, 6 and 4
/// kinds), so any two of the first 60 series differ in at least one of them.
fn series_style(i: usize) -> SeriesStyle {
    const MARKERS: [Marker; 6] = [
        Marker::Circle,
        Marker::Square,
        Marker::TriangleUp,
        Marker::Diamond,
        Marker::TriangleDown,
        Marker::Cross,
    ];
    const STROKES: [Stroke; 4] = [
        Stroke::Solid,
        Stroke::Dashed,
        Stroke::Dotted,
        Stroke::DashDot,
    ];
    SeriesStyle {
        color: SERIES_COLORS[i % SERIES_COLORS.len()],
        marker: MARKERS[i % MARKERS.len()],
        stroke: STROKES[i % STROKES.len()],
        // The golden ratio's fractional multiples spread any number of series apart.
        phase: (i as f64 * 0.618_033_988_75).fract(),
    }
}

/// Whether the pixel `(dx, dy)` from a marker's centre belongs to `marker` (about 9 pixels
/// across).
fn marker_hit(marker: Marker, dx: i32, dy: i32) -> bool {
    let (ax, ay) = (dx.abs(), dy.abs());
    match marker {
        Marker::Circle => dx * dx + dy * dy <= 13,
        Marker::Square => ax <= 3 && ay <= 3,
        Marker::Diamond => ax + ay <= 4,
        Marker::TriangleUp => (-4..=3).contains(&dy) && 2 * ax <= dy + 4,
        Marker::TriangleDown => (-3..=4).contains(&dy) && 2 * ax <= 4 - dy,
        Marker::Cross => ax <= 4 && ay <= 4 && (ax - ay).abs() <= 1,
    }
}

/// Pixels of one series' drawing, kept only inside `rect`; [`Canvas::flush`] draws them.
struct Canvas {
    rect: PixelRect,
    /// Per pixel of `rect`, row-major: 0 untouched, 1 the series' colour, 2 white (a marker's
    /// outline, which keeps it visible over other lines).
    mask: Vec<u8>,
}

impl Canvas {
    fn new(rect: PixelRect) -> Canvas {
        let w = rect.x.len();
        let h = rect.y.len();
        Canvas {
            rect,
            mask: vec![0; w * h],
        }
    }

    /// Set `(x, y)` (image pixels) to `v`; nothing outside the rectangle.
    fn set(&mut self, (x, y): (i32, i32), v: u8) {
        if self.rect.contains((x, y)) {
            let w = self.rect.x.len();
            let i = (y - self.rect.y.start) as usize * w + (x - self.rect.x.start) as usize;
            self.mask[i] = v;
        }
    }

    /// A 2-pixel-wide polyline through `pts` (image pixels), dashed by `stroke`.
    fn polyline(&mut self, pts: &[(f64, f64)], stroke: Stroke) {
        let mut s = 0.0;
        for w in pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len = (dx * dx + dy * dy).sqrt();
            let n = dx.abs().max(dy.abs()).ceil().max(1.0) as usize;
            // One pixel per step along the major axis, doubled across it: 2 pixels wide.
            let across = if dx.abs() >= dy.abs() { (0, 1) } else { (1, 0) };
            for k in 0..=n {
                let t = k as f64 / n as f64;
                if stroke.on(s + t * len) {
                    let (x, y) = ((a.0 + t * dx).round() as i32, (a.1 + t * dy).round() as i32);
                    self.set((x, y), 1);
                    self.set((x + across.0, y + across.1), 1);
                }
            }
            s += len;
        }
    }

    /// `marker` centred at `(x, y)`, outlined in white.
    fn marker(&mut self, (x, y): (i32, i32), marker: Marker) {
        for dy in -5..=5 {
            for dx in -5..=5 {
                let hit = marker_hit(marker, dx, dy);
                let near = !hit
                    && [(-1, 0), (1, 0), (0, -1), (0, 1)]
                        .iter()
                        .any(|&(ox, oy)| marker_hit(marker, dx + ox, dy + oy));
                if hit {
                    self.set((x + dx, y + dy), 1);
                } else if near {
                    self.set((x + dx, y + dy), 2);
                }
            }
        }
    }

    /// Draw the marked pixels onto the image through `area` (any drawing area of the image).
    fn flush(&self, area: &DrawingArea<BitMapBackend, Shift>, color: RGBColor) -> Result<()> {
        let screen = area.use_screen_coord();
        let w = self.rect.x.len().max(1);
        for (i, &v) in self.mask.iter().enumerate() {
            if v == 0 {
                continue;
            }
            let p = (
                self.rect.x.start + (i % w) as i32,
                self.rect.y.start + (i / w) as i32,
            );
            let c = if v == 1 { color } else { WHITE };
            screen.draw_pixel(p, &c)?;
        }
        Ok(())
    }
}

/// The indices of the points of `runs` (concatenated) that get a marker: all of them for a
/// short series, else about [`MARKERS_PER_SERIES`] spread evenly over the frames starting at
/// `phase` of their spacing; and every lone point between gaps.
fn marker_indices(runs: &[Vec<(f64, f64)>], phase: f64) -> Vec<usize> {
    let all: Vec<f64> = runs.iter().flatten().map(|&(x, _)| x).collect();
    if all.len() <= MARKER_MAX_POINTS {
        return (0..all.len()).collect();
    }
    let mut out = lone_points(runs);
    let (lo, hi) = (all[0], all[all.len() - 1]);
    let step = (hi - lo) / MARKERS_PER_SERIES as f64;
    for k in 0..MARKERS_PER_SERIES {
        let target = lo + (k as f64 + phase) * step;
        // The points are ordered by frames: the first at or past the target.
        let i = all.partition_point(|&x| x < target).min(all.len() - 1);
        out.push(i);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The indices of the points of `runs` (concatenated) that are alone in their run.
fn lone_points(runs: &[Vec<(f64, f64)>]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut start = 0;
    for r in runs {
        if r.len() == 1 {
            out.push(start);
        }
        start += r.len();
    }
    out
}

/// A series to draw: legend label, style, and its runs of finite points.
struct Line<'a> {
    label: Option<&'a str>,
    style: SeriesStyle,
    runs: Vec<Vec<(f64, f64)>>,
    /// Markers along a long series too (charts with several series, which they tell apart);
    /// otherwise only a short series, or a lone point, gets markers.
    spread_markers: bool,
}

/// Draw `lines` (in order, later over earlier) in `chart`'s plotting area, and nowhere else;
/// returns that area.
fn draw_lines(chart: &Chart, lines: &[Line]) -> Result<PixelRect> {
    let rect = plot_rect(chart);
    for line in lines {
        let mut canvas = Canvas::new(rect.clone());
        let px = |&(x, y): &(f64, f64)| -> (f64, f64) {
            let (bx, by) = chart.backend_coord(&(x, y));
            (f64::from(bx), f64::from(by))
        };
        for run in &line.runs {
            let pts: Vec<(f64, f64)> = run.iter().map(px).collect();
            canvas.polyline(&pts, line.style.stroke);
        }
        let flat: Vec<&(f64, f64)> = line.runs.iter().flatten().collect();
        let n: usize = line.runs.iter().map(Vec::len).sum();
        let markers = if line.spread_markers || n <= MARKER_MAX_POINTS {
            marker_indices(&line.runs, line.style.phase)
        } else {
            lone_points(&line.runs)
        };
        for i in markers {
            if let Some(&&p) = flat.get(i) {
                canvas.marker(chart.backend_coord(&p), line.style.marker);
            }
        }
        canvas.flush(&chart.plotting_area().strip_coord_spec(), line.style.color)?;
    }
    Ok(rect)
}

/// The legend of `lines` in `area` (a column beside the chart), entries from row `top` of the
/// image down: a sample of each line with its dash and marker, and its label (cut to fit);
/// then `band_desc`, wrapped, after a swatch of the band's shade.
fn draw_legend(
    area: &DrawingArea<BitMapBackend, Shift>,
    top: i32,
    lines: &[Line],
    band_desc: Option<&str>,
) -> Result<()> {
    let screen = area.use_screen_coord();
    let (ax, ay) = area.get_pixel_range();
    let font = (FONT, 14).into_font().color(&BLACK);
    let left = ax.start + 8;
    let sample = 40;
    let text_x = left + sample + 8;
    let text_w = (ax.end - 6 - text_x).max(10) as u32;
    let mut y = top.max(ay.start) + 10;
    for line in lines.iter().filter(|l| l.label.is_some()) {
        let rect = PixelRect {
            x: left - 6..left + sample + 6,
            y: y - 8..y + 9,
        };
        let mut canvas = Canvas::new(rect);
        let pts = [
            (f64::from(left), f64::from(y)),
            (f64::from(left + sample), f64::from(y)),
        ];
        canvas.polyline(&pts, line.style.stroke);
        canvas.marker((left + sample / 2, y), line.style.marker);
        canvas.flush(area, line.style.color)?;
        let label = fit_text(area, line.label.unwrap_or_default(), &font, text_w)?;
        let style = font.clone().pos(Pos::new(HPos::Left, VPos::Center));
        screen.draw(&Text::new(label, (text_x, y), style))?;
        y += 24;
    }
    if let Some(desc) = band_desc {
        y += 10;
        let shade = lines.first().map_or(SERIES_COLORS[0], |l| l.style.color);
        screen.draw(&Rectangle::new(
            [(left, y), (left + sample, y + 12)],
            shade.mix(0.18).filled(),
        ))?;
        y += 20;
        let small = (FONT, 13).into_font().color(&BLACK);
        let width = (ax.end - 6 - left).max(10) as u32;
        for row in wrap_text(area, desc, &small, width)? {
            let style = small.clone().pos(Pos::new(HPos::Left, VPos::Top));
            screen.draw(&Text::new(row, (left, y), style))?;
            y += 17;
        }
    }
    Ok(())
}

/// `text` cut (with "...") to at most `width` pixels in `font`.
fn fit_text(
    area: &DrawingArea<BitMapBackend, Shift>,
    text: &str,
    font: &TextStyle,
    width: u32,
) -> Result<String> {
    if area.estimate_text_size(text, font)?.0 <= width {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (0..chars.len()).rev() {
        let s: String = chars[..n].iter().chain(['.', '.', '.'].iter()).collect();
        if area.estimate_text_size(&s, font)?.0 <= width {
            return Ok(s);
        }
    }
    Ok(String::new())
}

/// `text` broken at spaces into rows of at most `width` pixels in `font` (a word wider than
/// that gets a row of its own).
fn wrap_text(
    area: &DrawingArea<BitMapBackend, Shift>,
    text: &str,
    font: &TextStyle,
    width: u32,
) -> Result<Vec<String>> {
    let mut rows: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let candidate = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if cur.is_empty() || area.estimate_text_size(&candidate, font)?.0 <= width {
            cur = candidate;
        } else {
            rows.push(std::mem::replace(&mut cur, word.to_string()));
        }
    }
    if !cur.is_empty() {
        rows.push(cur);
    }
    Ok(rows)
}

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

/// `(lo, hi)` widened by [`AXIS_MARGIN`] of its span at each end.
fn with_margin((lo, hi): (f64, f64)) -> (f64, f64) {
    let pad = AXIS_MARGIN * (hi - lo);
    (lo - pad, hi + pad)
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
/// `body`, which returns the rectangles it drew data in.
fn draw(
    title: &str,
    body: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<Vec<PixelRect>>,
) -> Result<(Frame, Vec<PixelRect>)> {
    draw_sized(title, CURVE_WIDTH, CURVE_HEIGHT, body)
}

/// [`draw`] at `width x height`. A title wider than the image is set in a smaller font.
fn draw_sized(
    title: &str,
    width: u32,
    height: u32,
    body: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<Vec<PixelRect>>,
) -> Result<(Frame, Vec<PixelRect>)> {
    ensure_font()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    let rects;
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut size = TITLE_SIZE;
        while size > TITLE_MIN_SIZE
            && root
                .estimate_text_size(title, &(FONT, size).into_font().into())?
                .0
                > width.saturating_sub(20)
        {
            size -= 1;
        }
        let inner = root.titled(title, (FONT, size).into_font())?;
        rects = body(&inner)?;
        root.present()?;
    }
    Ok((Frame { width, height, rgb }, rects))
}

/// A chart in `area` with frames `0..x_max` across and `y` up (both with a margin at each
/// end), axis names, ticks and grid.
fn axes<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    y_desc: &str,
    x_max: f64,
    y: (f64, f64),
) -> Result<Chart<'a, 'b>> {
    let (x0, x1) = with_margin((0.0, x_max));
    let (y0, y1) = with_margin(y);
    let span = y.1 - y.0;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("frames")
        .y_desc(y_desc)
        // The margins hold no data: no tick labels there (e.g. negative frames).
        .x_label_formatter(&|v| {
            if *v < 0.0 {
                String::new()
            } else {
                format_frames(*v)
            }
        })
        .y_label_formatter(&move |v| format_value(*v, span))
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 13))
        .draw()?;
    Ok(chart)
}

/// "no data" in the middle of `chart`.
fn no_data_note(chart: &Chart, x_max: f64, y: (f64, f64)) -> Result<()> {
    let note = (FONT, 18)
        .into_font()
        .color(&NOTE_COLOR)
        .pos(Pos::new(HPos::Center, VPos::Center));
    let centre = (x_max / 2.0, (y.0 + y.1) / 2.0);
    chart
        .plotting_area()
        .draw(&Text::new("no data", centre, note))?;
    Ok(())
}

/// One chart in `area`: `lines` against frames `0..x_max`, y in `y`, a "no data" note when
/// nothing is drawable; returns its plotting area.
fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    y_desc: &str,
    x_max: f64,
    y: (f64, f64),
    lines: &[Line],
) -> Result<PixelRect> {
    let chart = axes(area, y_desc, x_max, y)?;
    let rect = draw_lines(&chart, lines)?;
    if lines.iter().all(|l| l.runs.is_empty()) {
        no_data_note(&chart, x_max, y)?;
    }
    Ok(rect)
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

    /// A curve that swings between 0 and 1 over its first updates (as a rolling window that
    /// holds a handful of episodes gives), then rises: the shape whose 2-pixel plotters line
    /// reached through the title and under the x axis.
    fn swinging_curve() -> Vec<CurvePoint> {
        (0..2000u64)
            .map(|i| {
                let t = i as f64 / 2000.0;
                let success = if i < 40 {
                    if (i * 7919) % 3 == 0 {
                        0.02 * (i % 5) as f64
                    } else {
                        1.0 - 0.03 * (i % 4) as f64
                    }
                } else {
                    0.3 + 0.6 * t
                };
                CurvePoint {
                    frames: i * 3000,
                    success,
                    mean_return: 0.9 * success,
                }
            })
            .collect()
    }

    /// The pixels of `frame` whose colour is exactly `c`.
    fn pixels_of(frame: &Frame, c: RGBColor) -> Vec<(i32, i32)> {
        frame
            .rgb
            .chunks_exact(3)
            .enumerate()
            .filter(|(_, p)| p == &[c.0, c.1, c.2])
            .map(|(i, _)| {
                (
                    (i % frame.width as usize) as i32,
                    (i / frame.width as usize) as i32,
                )
            })
            .collect()
    }

    #[test]
    fn curve_data_stays_inside_its_plotting_areas() {
        let (frame, rects) = render_curve("t", Some(500), &swinging_curve()).unwrap();
        assert_eq!(rects.len(), 2);
        let blue = pixels_of(&frame, SERIES_COLORS[0]);
        assert!(blue.len() > 1000, "the curve is drawn");
        for p in &blue {
            assert!(
                rects.iter().any(|r| r.contains(*p)),
                "{p:?} outside {rects:?}"
            );
        }
        // The plotting areas are under the title band, so nothing reaches the title.
        for r in &rects {
            assert!(r.y.start >= 30, "{r:?}");
        }
        // The first point (frames 0) and the last are inside with their markers: the data's
        // extreme columns lie strictly inside the areas.
        let (min_x, max_x) = blue
            .iter()
            .filter(|p| rects[0].contains(**p))
            .fold((i32::MAX, i32::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        assert!(min_x > rects[0].x.start && max_x < rects[0].x.end - 1);
    }

    #[test]
    fn series_differ_in_marker_or_dash_and_legend_sits_beside_the_plot() {
        for i in 0..60 {
            for j in i + 1..60 {
                let (a, b) = (series_style(i), series_style(j));
                assert!(
                    a.color != b.color || a.marker != b.marker || a.stroke != b.stroke,
                    "{i} {j}"
                );
            }
        }
        // Two series with the same values: both colours show, and every pixel of a series'
        // colour lies in the plotting area or in the legend column right of it.
        let pts: Vec<BandPoint> = (0..500u64)
            .map(|i| BandPoint {
                frames: i * 1000,
                mid: i as f64 / 500.0,
                lo: 0.0,
                hi: 1.0,
            })
            .collect();
        let series: Vec<BandSeries> = ["a", "b"]
            .iter()
            .map(|l| BandSeries {
                label: l.to_string(),
                points: pts.clone(),
            })
            .collect();
        let (frame, rects) = render_banded("t", "success", "band: test", &series).unwrap();
        let legend_x = (CURVE_WIDTH - LEGEND_WIDTH) as i32;
        assert!(rects[0].x.end <= legend_x);
        for c in [SERIES_COLORS[0], SERIES_COLORS[1]] {
            let px = pixels_of(&frame, c);
            let inside = px.iter().filter(|p| rects[0].contains(**p)).count();
            let legend = px.iter().filter(|p| p.0 >= legend_x).count();
            assert!(inside > 50 && legend > 10, "{c:?}: {inside} {legend}");
            assert_eq!(inside + legend, px.len(), "{c:?}");
        }
    }

    #[test]
    fn markers_spread_over_long_series_and_differ_by_phase() {
        let run: Vec<(f64, f64)> = (0..1000).map(|i| (f64::from(i), 0.5)).collect();
        let a = marker_indices(std::slice::from_ref(&run), series_style(0).phase);
        let b = marker_indices(std::slice::from_ref(&run), series_style(1).phase);
        assert_eq!(a.len(), MARKERS_PER_SERIES);
        assert!(a.iter().all(|i| !b.contains(i)), "{a:?} {b:?}");
        // Short series: every point; lone points always.
        let short = vec![vec![(0.0, 0.1)], vec![(1.0, 0.2), (2.0, 0.3)]];
        assert_eq!(marker_indices(&short, 0.3), vec![0, 1, 2]);
        let mut long = vec![vec![(-1.0, 0.0)]];
        long.push(run);
        assert!(marker_indices(&long, 0.5).contains(&0));
    }

    #[test]
    fn heatmaps_have_a_colour_bar_and_axis_names() {
        let panel = HeatPanel {
            title: "arm".into(),
            row_labels: vec!["m0".into(), "m1".into()],
            axis: HeatAxis::Frames(vec![0, 10, 20]),
            values: vec![0.0, 1.0, f64::NAN, 0.5],
        };
        let labels = HeatLabels {
            x: "frames",
            y: "module",
            scale: "fraction of steps active",
        };
        let (frame, rects) = render_heatmaps("t", &labels, &[panel]).unwrap();
        let bar = rects.last().unwrap();
        assert!(bar.x.start >= (CURVE_WIDTH - COLORBAR_WIDTH) as i32);
        // The bar runs from white at the bottom to dark blue at the top.
        let x = (bar.x.start + bar.x.end) / 2;
        let px = |y: i32| frame.pixel(x as u32, y as u32).unwrap();
        let top = px(bar.y.start + 2);
        let bottom = px(bar.y.end - 3);
        assert!(top[0] < 20 && top[2] < 120, "{top:?}");
        assert!(bottom[0] > 240 && bottom[2] > 240, "{bottom:?}");
    }
}
