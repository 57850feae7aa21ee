//! PNG charts for the crate's reports: line charts (variance-explained curves, loss curves)
//! and heat maps (importance of heads × layers).
//!
//! Charts are drawn by `plotters` into an RGB buffer and encoded by `png`, so no image crate is
//! pulled in. Text needs a font file, found at run time: `NEXUS_FONT=<file.ttf>` names one
//! (an unreadable or invalid file is an error: the user asked for it), `NEXUS_FONT=none` turns
//! text off, and otherwise the usual system locations of DejaVu Sans or Liberation Sans are
//! tried (`apt-get install fonts-dejavu-core` provides the first). When none is found the
//! charts are still drawn, without any text (titles, axis labels, ticks, legends), and
//! [`text_font`] returns `None` so that a report can say so next to its images.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle, HSLColor};

/// One named curve of a line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: nothing to plot: {what}")]
    Empty { path: PathBuf, what: String },
    #[error("{path}: drawing the chart failed: {what}")]
    Draw { path: PathBuf, what: String },
    #[error("{path}: encoding the PNG failed: {source}")]
    Encode {
        path: PathBuf,
        source: png::EncodingError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("font {path} (from NEXUS_FONT): {what}")]
    Font { path: PathBuf, what: String },
}

const LINE_SIZE: (u32, u32) = (960, 600);
/// Family name the font file is registered under for plotters.
const FAMILY: &str = "sans-serif";

/// Font files tried, in order, when `NEXUS_FONT` is not set.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// The font file charts write their text with, or `None` when they are drawn without text
/// (no font found, or `NEXUS_FONT=none`).
pub fn text_font() -> Option<&'static Path> {
    font().ok().flatten().map(PathBuf::as_path)
}

/// Registers the font once per process; plotters keeps fonts in a global table that wants
/// `'static` bytes, so the file is read once and leaked (a few hundred kB).
fn font() -> Result<Option<&'static PathBuf>, PlotError> {
    static FONT: OnceLock<Result<Option<PathBuf>, (PathBuf, String)>> = OnceLock::new();
    let found = FONT.get_or_init(|| match std::env::var_os("NEXUS_FONT") {
        Some(v) if v == "none" => Ok(None),
        Some(v) if !v.is_empty() => {
            let path = PathBuf::from(v);
            load_font(&path)
                .map(|()| Some(path.clone()))
                .map_err(|what| (path, what))
        }
        _ => Ok(FONT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| load_font(p).is_ok())),
    });
    match found {
        Ok(path) => Ok(path.as_ref()),
        Err((path, what)) => Err(PlotError::Font {
            path: path.clone(),
            what: what.clone(),
        }),
    }
}

fn load_font(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| "not a TrueType/OpenType font".to_string())
}

/// Draws `series` as lines over a shared x axis; `log_y` plots log10(y) (points with y ≤ 0
/// cannot be shown and are left out). Non-finite points are left out too.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<(), PlotError> {
    let text = font()?.is_some();
    let png = draw_line_chart(path, title, x_label, y_label, series, log_y, text)?;
    write_atomic(path, &png).map_err(|source| PlotError::Io {
        path: path.into(),
        source,
    })
}

/// Draws `values` (rows of equal length) as coloured cells: columns along x, rows along y
/// (row 0 at the bottom), with a colour bar from the smallest to the largest finite value.
/// Non-finite cells are grey.
pub fn heat_map(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    values: &[Vec<f64>],
) -> Result<(), PlotError> {
    let text = font()?.is_some();
    let png = draw_heat_map(path, title, x_label, y_label, values, text)?;
    write_atomic(path, &png).map_err(|source| PlotError::Io {
        path: path.into(),
        source,
    })
}

fn draw_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.into(),
        what: e.to_string(),
    }
}

fn draw_line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
    text: bool,
) -> Result<Vec<u8>, PlotError> {
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let shown: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(keep)
                .map(|(x, y)| (x, if log_y { y.log10() } else { y }))
                .collect()
        })
        .collect();
    let all = || shown.iter().flatten();
    if all().next().is_none() {
        let what = if log_y {
            "no finite positive points"
        } else {
            "no finite points"
        };
        return Err(PlotError::Empty {
            path: path.into(),
            what: what.into(),
        });
    }
    let (x0, x1) = padded_range(all().map(|p| p.0), 0.0);
    let (y0, y1) = padded_range(all().map(|p| p.1), 0.05);

    let (w, h) = LINE_SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let err = draw_err(path);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(16);
        if text {
            builder
                .caption(title, (FAMILY, 22))
                .x_label_area_size(44)
                .y_label_area_size(72);
        }
        let mut chart = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        let y_fmt = |v: &f64| {
            if log_y {
                format!("{:.1e}", 10f64.powf(*v))
            } else {
                format!("{v:.3}")
            }
        };
        let x_fmt = |v: &f64| format!("{v}");
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc(x_label)
                .y_desc(y_label)
                .label_style((FAMILY, 14))
                .axis_desc_style((FAMILY, 16))
                .y_label_formatter(&y_fmt)
                .x_label_formatter(&x_fmt);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| err(&e))?;

        // With many curves (one per layer) the legend names about ten of them.
        let step = series.len().div_ceil(10).max(1);
        for (i, (s, pts)) in series.iter().zip(&shown).enumerate() {
            let color = ramp_color(i, series.len());
            let drawn = chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?;
            if text && (i % step == 0 || i + 1 == series.len()) {
                drawn.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(legend_corner(&shown, (x0, x1), (y0, y1)))
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    encode_png(path, &buf, w, h)
}

fn draw_heat_map(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    values: &[Vec<f64>],
    text: bool,
) -> Result<Vec<u8>, PlotError> {
    let rows = values.len();
    let cols = values.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Err(PlotError::Empty {
            path: path.into(),
            what: format!("{rows} rows of {cols} values"),
        });
    }
    if let Some((r, row)) = values.iter().enumerate().find(|(_, row)| row.len() != cols) {
        return Err(PlotError::Empty {
            path: path.into(),
            what: format!("row {r} has {} values, row 0 has {cols}", row.len()),
        });
    }
    let finite = || values.iter().flatten().copied().filter(|v| v.is_finite());
    let lo = finite().fold(f64::INFINITY, f64::min);
    let hi = finite().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };

    // Cells of at least ~14 px, the picture between 640 and 1400 px wide.
    let w = (cols as u32 * 28 + 240).clamp(640, 1400);
    let h = (rows as u32 * 28 + 160).clamp(360, 1000);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let err = draw_err(path);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (main, bar) = root.split_horizontally(w - 110);

        let mut builder = ChartBuilder::on(&main);
        builder.margin(16);
        if text {
            builder
                .caption(title, (FAMILY, 22))
                .x_label_area_size(44)
                .y_label_area_size(56);
        }
        let mut chart = builder
            .build_cartesian_2d(
                // plotters' segmented `a..b` holds b - a + 1 segments.
                (0..cols as i32 - 1).into_segmented(),
                (0..rows as i32 - 1).into_segmented(),
            )
            .map_err(|e| err(&e))?;
        let seg_fmt = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => i.to_string(),
            _ => String::new(),
        };
        let mut mesh = chart.configure_mesh();
        mesh.disable_mesh();
        if text {
            mesh.x_desc(x_label)
                .y_desc(y_label)
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 16))
                .x_labels(cols.min(40))
                .y_labels(rows.min(40))
                .x_label_formatter(&seg_fmt)
                .y_label_formatter(&seg_fmt);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| err(&e))?;
        let cells = values.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().map(move |(c, &v)| {
                let color = if v.is_finite() {
                    heat_color((v - lo) / span)
                } else {
                    RGBColor(160, 160, 160)
                };
                let (c, r) = (c as i32, r as i32);
                Rectangle::new(
                    [
                        (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                        (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
                    ],
                    color.filled(),
                )
            })
        });
        chart.draw_series(cells).map_err(|e| err(&e))?;

        // Colour bar: the ramp from the smallest (bottom) to the largest (top) finite value.
        let mut bar_builder = ChartBuilder::on(&bar);
        bar_builder
            .margin_top(if text { 56 } else { 16 })
            .margin_bottom(if text { 60 } else { 16 })
            .margin_right(12);
        if text {
            bar_builder.y_label_area_size(64);
        }
        let (b0, b1) = if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, lo + 0.5)
        };
        let mut bar_chart = bar_builder
            .build_cartesian_2d(0f64..1f64, b0..b1)
            .map_err(|e| err(&e))?;
        let mut bar_mesh = bar_chart.configure_mesh();
        bar_mesh.disable_mesh().x_labels(0);
        if text {
            bar_mesh
                .label_style((FAMILY, 12))
                .y_labels(6)
                .y_label_formatter(&|v: &f64| format!("{v:.3}"));
        } else {
            bar_mesh.y_labels(0);
        }
        bar_mesh.draw().map_err(|e| err(&e))?;
        let steps = 100;
        let band = (b1 - b0) / steps as f64;
        bar_chart
            .draw_series((0..steps).map(|i| {
                let v0 = b0 + band * i as f64;
                Rectangle::new(
                    [(0.0, v0), (1.0, v0 + band)],
                    heat_color(i as f64 / (steps - 1) as f64).filled(),
                )
            }))
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    encode_png(path, &buf, w, h)
}

/// The range of `values` widened by `pad` of its span on each side (and to a unit span when
/// every value is the same), so no point sits on the frame.
fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if hi > lo {
        let p = (hi - lo) * pad;
        (lo - p, hi + p)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

/// The corner of the plot with the fewest points, where the legend hides the least.
fn legend_corner(
    shown: &[Vec<(f64, f64)>],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    let mut count = [0usize; 4];
    for &(x, y) in shown.iter().flatten() {
        let right = (x - x0) / (x1 - x0) > 0.5;
        let upper = (y - y0) / (y1 - y0) > 0.5;
        count[usize::from(right) + 2 * usize::from(upper)] += 1;
    }
    let corners = [
        SeriesLabelPosition::LowerLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::UpperRight,
    ];
    // Ties go to the lower right, then the upper right: the usual places.
    let best = [1, 3, 0, 2]
        .into_iter()
        .min_by_key(|&i| count[i])
        .unwrap_or(1);
    corners[best].clone()
}

/// Series `i` of `n` on a blue → red hue ramp, so layer order reads as colour order.
fn ramp_color(i: usize, n: usize) -> HSLColor {
    let t = if n > 1 {
        i as f64 / (n - 1) as f64
    } else {
        0.0
    };
    HSLColor((1.0 - t) * 240.0 / 360.0, 0.85, 0.45)
}

/// A perceptually ordered ramp (dark purple → blue → green → yellow, like viridis) at `t` ∈ [0, 1].
fn heat_color(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn encode_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, PlotError> {
    let mut out = Vec::new();
    let enc = |source| PlotError::Encode {
        path: path.into(),
        source,
    };
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(enc)?;
    writer.write_image_data(rgb).map_err(enc)?;
    writer.finish().map_err(enc)?;
    Ok(out)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it into place, so a
/// reader never sees a half-written file; shared by the crate's writers.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width and height from a PNG's IHDR, after checking the signature; then a full decode.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        let size = (
            u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
            u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
        );
        let mut reader = png::Decoder::new(bytes).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), size);
        size
    }

    fn curves(n: usize) -> Vec<Series> {
        (0..n)
            .map(|l| Series {
                name: format!("layer {l}"),
                points: (1..=50)
                    .map(|k| (k as f64, 1.0 - (-(k as f64) / (l + 2) as f64).exp()))
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn line_chart_writes_a_png_of_the_chart_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        line_chart(
            &path,
            "variance explained",
            "components",
            "fraction",
            &curves(30),
            false,
        )
        .unwrap();
        assert_eq!(png_size(&std::fs::read(&path).unwrap()), LINE_SIZE);
        // Only the chart is left in the folder: the temporary file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn charts_without_a_font_are_still_drawn() {
        let path = Path::new("no-text.png");
        let png = draw_line_chart(path, "t", "x", "y", &curves(3), true, false).unwrap();
        assert_eq!(png_size(&png), LINE_SIZE);
        let png = draw_heat_map(
            path,
            "t",
            "x",
            "y",
            &[vec![1.0, 2.0], vec![3.0, f64::NAN]],
            false,
        )
        .unwrap();
        png_size(&png);
    }

    #[test]
    fn heat_map_colours_cells_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heat.png");
        let values: Vec<Vec<f64>> = (0..9)
            .map(|h| (0..30).map(|l| (h * l) as f64).collect())
            .collect();
        heat_map(&path, "head importance", "layer", "head", &values).unwrap();
        let (w, h) = png_size(&std::fs::read(&path).unwrap());
        assert!(w >= 640 && h >= 360, "{w}×{h}");
        // The ramp's ends differ, so the smallest and the largest value are told apart.
        assert_ne!(heat_color(0.0), heat_color(1.0));
    }

    #[test]
    fn every_cell_fills_its_share_of_the_map() {
        let png = draw_heat_map(
            Path::new("cells.png"),
            "t",
            "x",
            "y",
            &[vec![0.0, 1.0], vec![2.0, 3.0]],
            false,
        )
        .unwrap();
        let mut reader = png::Decoder::new(&png[..]).read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut rgb).unwrap();
        for t in [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0] {
            let c = heat_color(t);
            let n = rgb
                .chunks_exact(3)
                .filter(|p| p == &[c.0, c.1, c.2])
                .count();
            // A quarter of the plot area each (the colour bar holds ~1% of a colour).
            assert!(n > 20_000, "value {t}: {n} pixels");
        }
        // One cell, with text where a font exists.
        let text = text_font().is_some();
        draw_heat_map(Path::new("one.png"), "t", "x", "y", &[vec![5.0]], text).unwrap();
    }

    #[test]
    fn nothing_to_draw_is_an_error_naming_the_file() {
        let path = Path::new("/nonexistent/empty.png");
        let e = line_chart(
            path,
            "t",
            "x",
            "y",
            &[Series {
                name: "s".into(),
                points: vec![(1.0, -1.0)],
            }],
            true,
        )
        .unwrap_err();
        assert!(
            matches!(e, PlotError::Empty { .. }) && e.to_string().contains("empty.png"),
            "{e}"
        );
        let e = heat_map(path, "t", "x", "y", &[vec![1.0, 2.0], vec![1.0]]).unwrap_err();
        assert!(e.to_string().contains("row 1 has 1 values"), "{e}");
        let e = heat_map(path, "t", "x", "y", &[]).unwrap_err();
        assert!(matches!(e, PlotError::Empty { .. }), "{e}");
    }

    #[test]
    fn unwritable_destination_is_an_io_error() {
        let e = line_chart(
            Path::new("/nonexistent/dir/c.png"),
            "t",
            "x",
            "y",
            &curves(1),
            false,
        )
        .unwrap_err();
        assert!(matches!(e, PlotError::Io { .. }), "{e}");
    }
}
