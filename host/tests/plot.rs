//! `host::plot`: learning-curve PNGs decode as images of the documented size for normal,
//! single-point, empty and non-finite input, are written atomically, and bad paths are errors;
//! banded curves and heatmaps likewise.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use host::plot::{
    write_banded_curves, write_curve, write_curves, write_heatmaps, BandPoint, BandSeries,
    CurvePoint, HeatAxis, HeatLabels, HeatPanel, CURVE_HEIGHT, CURVE_WIDTH, HEAT_PANEL_HEIGHT,
};

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metarim-plot-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Decode the PNG at `path`: `(width, height, rgb)`.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(BufReader::new(File::open(path).unwrap()))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Pixels that are neither white nor grey: drawn series (and coloured legend marks).
fn coloured_pixels(rgb: &[u8]) -> usize {
    rgb.chunks_exact(3)
        .filter(|p| {
            let (lo, hi) = (p.iter().min().unwrap(), p.iter().max().unwrap());
            hi - lo > 60
        })
        .count()
}

fn curve(n: u64) -> Vec<CurvePoint> {
    (0..n)
        .map(|i| {
            let t = i as f64 / n.max(1) as f64;
            CurvePoint {
                frames: i * 25_000,
                success: t * t,
                mean_return: 0.9 * t,
            }
        })
        .collect()
}

#[test]
fn curve_is_a_png_of_the_documented_size() {
    let dir = scratch("curve");
    let cases: [(&str, Vec<CurvePoint>); 3] = [
        ("normal", curve(200)),
        ("single", curve(1)),
        ("empty", Vec::new()),
    ];
    for (name, pts) in &cases {
        let path = dir.join(format!("{name}.png"));
        write_curve(&path, &format!("GoToLocal, {name}"), Some(500), pts).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), (CURVE_WIDTH, CURVE_HEIGHT), "{name}");
        // Something is drawn (title, axes), on a mostly white background.
        let n = rgb.len() / 3;
        let white = rgb
            .chunks_exact(3)
            .filter(|p| p == &[255, 255, 255])
            .count();
        assert!(white > n / 2 && white < n, "{name}");
        let coloured = coloured_pixels(&rgb);
        if pts.is_empty() {
            assert_eq!(coloured, 0, "{name}: nothing to draw in colour");
        } else {
            assert!(coloured > 0, "{name}: the series shows");
        }
    }
    // Only the three images are left: no temporary files.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_values_do_not_panic() {
    let dir = scratch("nan");
    let mut pts = curve(50);
    pts[3].success = f64::NAN;
    pts[10].mean_return = f64::INFINITY;
    pts[11].mean_return = f64::NEG_INFINITY;
    pts[20].success = 7.0;
    pts[21].success = -3.0;
    pts[30].mean_return = 1e300;
    pts[31].mean_return = -f64::MAX;
    let path = dir.join("nan.png");
    write_curve(&path, "NaN", None, &pts).unwrap();
    assert_eq!(decode(&path).0, CURVE_WIDTH);
    let all_nan = vec![
        CurvePoint {
            frames: 5,
            success: f64::NAN,
            mean_return: f64::NAN,
        };
        4
    ];
    write_curve(&path, "all NaN", None, &all_nan).unwrap();
    assert_eq!(coloured_pixels(&decode(&path).2), 0);
    write_curves(&path, "NaN", &[("a", &all_nan), ("b", &pts)]).unwrap();
    assert_eq!(decode(&path).1, CURVE_HEIGHT);
    // Unsorted frames and duplicates are fine too.
    let mut shuffled = curve(30);
    shuffled.reverse();
    shuffled.push(shuffled[0]);
    write_curve(&path, "unsorted", None, &shuffled).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn several_series_share_one_chart() {
    let dir = scratch("series");
    let path = dir.join("modes.png");
    let a = curve(100);
    let b: Vec<CurvePoint> = curve(80)
        .into_iter()
        .map(|p| CurvePoint {
            success: p.success.sqrt(),
            ..p
        })
        .collect();
    let one = curve(1);
    write_curves(
        &path,
        "meta-RIM vs RIM",
        &[
            ("meta", &a),
            ("rim", &b),
            ("one point", &one),
            ("none", &[]),
        ],
    )
    .unwrap();
    let (w, h, rgb) = decode(&path);
    assert_eq!((w, h), (CURVE_WIDTH, CURVE_HEIGHT));
    // Each series has its own colour: the first two colours both show.
    let has = |c: [u8; 3]| rgb.chunks_exact(3).any(|p| p == c);
    assert!(has([31, 119, 180]) && has([255, 127, 14]));
    write_curves(&path, "nothing", &[]).unwrap();
    assert_eq!(decode(&path).0, CURVE_WIDTH);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_paths_are_errors() {
    let dir = scratch("bad");
    let missing = dir.join("no/such/dir/curve.png");
    let err = write_curve(&missing, "x", None, &curve(5)).unwrap_err();
    assert!(format!("{err:#}").contains("curve.png"), "{err:#}");
    assert!(write_curves(&missing, "x", &[("a", &curve(5))]).is_err());
    assert!(write_curve(&dir, "x", None, &curve(5)).is_err());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn banded_curves_draw_bands_and_survive_bad_values() {
    let dir = scratch("banded");
    let band = |n: u64, bad: bool| -> Vec<BandPoint> {
        (0..n)
            .map(|i| {
                let t = i as f64 / n.max(1) as f64;
                BandPoint {
                    frames: i * 1000,
                    mid: if bad && i == 2 { f64::NAN } else { t },
                    lo: (t - 0.2).max(0.0),
                    hi: if bad && i == 3 {
                        f64::INFINITY
                    } else {
                        t + 0.2
                    },
                }
            })
            .collect()
    };
    let series = [
        BandSeries {
            label: "meta-rim".into(),
            points: band(20, false),
        },
        BandSeries {
            label: "lstm".into(),
            points: band(20, true),
        },
    ];
    let path = dir.join("banded.png");
    write_banded_curves(&path, "bands", "success", "band: test", &series).unwrap();
    let (w, h, rgb) = decode(&path);
    assert_eq!((w, h), (CURVE_WIDTH, CURVE_HEIGHT));
    assert!(coloured_pixels(&rgb) > 1000);
    // Nothing to draw still gives an image.
    let empty = dir.join("empty.png");
    write_banded_curves(&empty, "none", "success", "", &[]).unwrap();
    assert_eq!(decode(&empty).0, CURVE_WIDTH);
}

/// Axis and scale names of the test heatmaps.
const LABELS: HeatLabels = HeatLabels {
    x: "frames",
    y: "module",
    scale: "fraction of steps active",
};

#[test]
fn heatmaps_stack_panels_and_check_their_shape() {
    let dir = scratch("heat");
    let panel = |title: &str, axis: HeatAxis, cols: usize| HeatPanel {
        title: title.into(),
        row_labels: vec!["m0".into(), "m1".into(), "m2".into()],
        axis,
        values: (0..3 * cols)
            .map(|i| {
                if i == 4 {
                    f64::NAN
                } else {
                    i as f64 / (3 * cols) as f64
                }
            })
            .collect(),
    };
    let panels = [
        panel(
            "over time",
            HeatAxis::Frames(vec![0, 100, 200, 300, 400]),
            4,
        ),
        panel(
            "per level",
            HeatAxis::Labels(vec!["A".into(), "B".into()]),
            2,
        ),
    ];
    let path = dir.join("heat.png");
    write_heatmaps(&path, "modules", &LABELS, &panels).unwrap();
    let (w, h, rgb) = decode(&path);
    assert_eq!((w, h), (CURVE_WIDTH, 60 + 2 * HEAT_PANEL_HEIGHT));
    // The dark end of the scale is drawn.
    assert!(rgb.chunks_exact(3).any(|p| p[0] < 40 && p[2] > 80));
    let mut bad = panels[0].clone();
    bad.values.pop();
    let e = write_heatmaps(&dir.join("bad.png"), "bad", &LABELS, &[bad]).unwrap_err();
    assert!(format!("{e:#}").contains("over time"), "{e:#}");
    assert!(!dir.join("bad.png").exists());
    write_heatmaps(&dir.join("none.png"), "none", &LABELS, &[]).unwrap();
    assert_eq!(decode(&dir.join("none.png")).1, 60 + HEAT_PANEL_HEIGHT);
}
