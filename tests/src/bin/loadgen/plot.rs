//! `loadgen plot`: the benchmarks' pictures, drawn from the CSV files they write.
//!
//! - `percentiles`: one line per run of `percentile,ms` rows (`loadgen visibility
//!   --percentiles-out`), the x axis in "nines" (50 %, 90 %, 99 %, 99.9 %...), so the tail
//!   gets as much room as the median.
//! - `series`: one line per file of `seconds,value` rows (a rate or a lag sampled over time).
//!
//! PNG through plotters' bitmap backend; text needs a TrueType font, read at run time from
//! `--font` (Debian's `fonts-dejavu-core` by default), so nothing links fontconfig.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Latency percentiles per run (`percentile,ms` rows).
    Percentiles,
    /// Values over time (`seconds,value` rows).
    Series,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub title: String,
    /// The y axis' label (series; percentiles are in milliseconds).
    #[arg(long, default_value = "value")]
    pub y_label: String,
    /// A TrueType font for the text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
    /// `LABEL=FILE.csv`, one per line drawn.
    #[arg(required = true)]
    pub inputs: Vec<String>,
}

/// A labelled line of (x, y) points.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let font = std::fs::read(&args.font).with_context(|| {
        format!(
            "reading the font {} (fonts-dejavu-core)",
            args.font.display()
        )
    })?;
    // plotters keeps registered fonts for the life of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    if register_font("sans-serif", FontStyle::Normal, font).is_err() {
        bail!("{} is not a TrueType font", args.font.display());
    }
    let mut lines = Vec::new();
    for input in &args.inputs {
        let (label, file) = input
            .split_once('=')
            .with_context(|| format!("{input:?} is not LABEL=FILE"))?;
        let mut points = read_csv(Path::new(file))?;
        if matches!(args.kind, Kind::Percentiles) {
            // x in nines: -log10 of the share of samples above the percentile.
            points.retain(|(p, _)| *p < 100.0);
            for point in &mut points {
                point.0 = -(1.0 - point.0 / 100.0).log10();
            }
        }
        ensure!(!points.is_empty(), "{file} has no rows");
        lines.push(Line {
            label: label.to_owned(),
            points,
        });
    }
    draw(args, &lines).map_err(|e| anyhow::anyhow!("drawing {}: {e}", args.out.display()))
}

fn read_csv(path: &Path) -> Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut points = Vec::new();
    // The first line names the columns.
    for (n, row) in text.lines().enumerate().skip(1) {
        let parse = |s: Option<&str>| s.and_then(|v| v.trim().parse::<f64>().ok());
        let mut cells = row.split(',');
        match (parse(cells.next()), parse(cells.next())) {
            (Some(x), Some(y)) => points.push((x, y)),
            _ => bail!("{}:{}: not two numbers: {row:?}", path.display(), n + 1),
        }
    }
    Ok(points)
}

fn draw(args: &PlotArgs, lines: &[Line]) -> Result<(), Box<dyn std::error::Error>> {
    let all = lines.iter().flat_map(|l| l.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let x_min = all
        .clone()
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min)
        .min(x_max);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.05;
    let root = BitMapBackend::new(&args.out, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&args.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(84)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)?;
    let percentiles = matches!(args.kind, Kind::Percentiles);
    let x_label = |x: &f64| {
        if percentiles {
            // Whole nines only (90 %, 99 %, 99.9 %); the ticks between stay unlabelled.
            if (x - x.round()).abs() > 0.01 {
                return String::new();
            }
            // Back from nines to a percentile: 1 -> 90 %, 2 -> 99 %, 3 -> 99.9 %.
            format!("{}%", trim(100.0 * (1.0 - 10f64.powf(-x))))
        } else {
            format!("{x:.0}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(if percentiles { "percentile" } else { "seconds" })
        .y_desc(if percentiles {
            "milliseconds"
        } else {
            args.y_label.as_str()
        })
        .x_label_formatter(&x_label)
        .x_labels(if percentiles {
            4 * (x_max - x_min).ceil() as usize + 1
        } else {
            10
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, line) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(&line.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

/// A percentile without trailing zeros: 99.9, 90, 99.99.
fn trim(p: f64) -> String {
    let text = format!("{p:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
