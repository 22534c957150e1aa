//! `--plot FILE.svg`: the table drawn. Three panels, one below the other:
//!
//! - round trips: a bar per ping-pong or call row up to its median, a whisker on to its 99th
//!   percentile, on a logarithmic time axis;
//! - streams and calls in flight: a bar per rate row, on a logarithmic axis;
//! - the distribution (CDF) of round-trip times of the spin and park rows, against the pipe
//!   and UNIX socket rows, from the recorded histograms.
//!
//! shmring's own rows are drawn in one colour, everything else in another. The SVG names its
//! fonts and leaves drawing the text to the viewer.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::case::{Case, Mode, Transport};
use super::report::Row;

/// Pixels per bar row, and the fixed parts of the picture.
const ROW_PX: u32 = 22;
const WIDTH: u32 = 1100;
const CDF_PX: u32 = 420;
const PANEL_EXTRA_PX: u32 = 90;
const LABEL_PX: u32 = 300;

const SHMRING: RGBColor = RGBColor(214, 39, 40);
const OTHER: RGBColor = RGBColor(120, 120, 120);
const LINE_COLOURS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Whether a row is shmring's (its rings or its RPC over them).
fn ours(transport: &str) -> bool {
    transport.starts_with("shmring") || transport.starts_with("rpc-shm") || transport == "rpc-tarpc-shm"
}

fn label(r: &Row) -> String {
    format!("{} {} {}", r.transport, r.mode, super::case::bytes(r.payload_bytes))
}

/// Whether a ping-pong row belongs in the distribution panel.
fn in_cdf(case: &Case) -> bool {
    matches!(case.mode, Mode::Spin | Mode::Park)
        || (case.mode == Mode::Blocking && matches!(case.transport, Transport::Pipe | Transport::UnixSocket))
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the plot: {e}")
}

/// Draws `rows` (and the histograms of the ping-pong rows, `rtts`) into an SVG at `path`.
pub(crate) fn draw(path: &Path, rows: &[Row], rtts: &[(Case, Histogram<u64>)]) -> Result<(), String> {
    let lat: Vec<&Row> = rows.iter().filter(|r| r.rtt_p50_ns.is_some()).collect();
    let rate: Vec<&Row> = rows.iter().filter(|r| r.msgs_per_s.is_some()).collect();
    let cdf: Vec<&(Case, Histogram<u64>)> = rtts.iter().filter(|(c, _)| in_cdf(c)).collect();
    let panel = |n: usize| if n == 0 { 0 } else { n as u32 * ROW_PX + PANEL_EXTRA_PX };
    let heights = [panel(lat.len()), panel(rate.len()), if cdf.is_empty() { 0 } else { CDF_PX }];
    let total: u32 = heights.iter().sum::<u32>().max(100);
    let root = SVGBackend::new(path, (WIDTH, total)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, rest) = root.split_vertically(heights[0]);
    let (middle, bottom) = rest.split_vertically(heights[1]);
    if !lat.is_empty() {
        let bars: Vec<(String, f64, f64, bool)> = lat
            .iter()
            .map(|r| {
                let (p50, p99) = (r.rtt_p50_ns.unwrap_or(1) as f64, r.rtt_p99_ns.unwrap_or(1) as f64);
                (label(r), p50.max(1.0), p99.max(1.0), ours(r.transport))
            })
            .collect();
        bar_panel(&top, "Round trip: median, whisker to p99 (lower is better)", "ns", &bars)?;
    }
    if !rate.is_empty() {
        let bars: Vec<(String, f64, f64, bool)> = rate
            .iter()
            .map(|r| {
                let v = r.msgs_per_s.unwrap_or(1.0).max(1.0);
                (label(r), v, v, ours(r.transport))
            })
            .collect();
        bar_panel(&middle, "Streams and calls in flight (higher is better)", "messages/s", &bars)?;
    }
    if !cdf.is_empty() {
        cdf_panel(&bottom, &cdf)?;
    }
    root.present().map_err(err)
}

/// Horizontal bars on a logarithmic axis: (label, bar end, whisker end, ours).
fn bar_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    bars: &[(String, f64, f64, bool)],
) -> Result<(), String> {
    let lo = bars.iter().map(|b| b.1).fold(f64::INFINITY, f64::min) / 2.0;
    let hi = bars.iter().map(|b| b.2.max(b.1)).fold(0.0, f64::max) * 2.0;
    let n = bars.len() as u32;
    // The first row at the top, as in the table.
    let slot = |i: usize| n - 1 - i as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(LABEL_PX)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < n => bars[(n - 1 - *i) as usize].0.clone(),
            _ => String::new(),
        })
        .x_desc(unit)
        .x_label_formatter(&|v| si(*v))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let colour = if b.3 { SHMRING } else { OTHER };
            let i = slot(i);
            Rectangle::new([(lo, SegmentValue::Exact(i)), (b.1, SegmentValue::Exact(i + 1))], colour.mix(0.85).filled())
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().filter(|(_, b)| b.2 > b.1).map(|(i, b)| {
            let i = slot(i);
            PathElement::new(vec![(b.1, SegmentValue::CenterOf(i)), (b.2, SegmentValue::CenterOf(i))], BLACK)
        }))
        .map_err(err)?;
    Ok(())
}

/// Round-trip distributions: the fraction of round trips at or below each time.
fn cdf_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: &[&(Case, Histogram<u64>)],
) -> Result<(), String> {
    let lo = rows.iter().map(|(_, h)| h.min().max(1)).min().unwrap_or(1) as f64 / 1.5;
    let hi = rows.iter().map(|(_, h)| h.max().max(2)).max().unwrap_or(2) as f64 * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption("Round-trip distribution: spin and park against pipe and UNIX socket", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("round trip, ns")
        .y_desc("fraction at or below")
        .x_label_formatter(&|v| si(*v))
        .draw()
        .map_err(err)?;
    for (k, (case, hist)) in rows.iter().enumerate() {
        let colour = LINE_COLOURS[k % LINE_COLOURS.len()];
        let points: Vec<(f64, f64)> =
            hist.iter_quantiles(4).map(|v| (v.value_iterated_to().max(1) as f64, v.quantile_iterated_to())).collect();
        let width = if ours(case.transport.name()) { 3 } else { 1 };
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(width)))
            .map_err(err)?
            .label(case.label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// 1.5k, 20M: axis numbers short enough to read (at most 3 significant digits).
fn si(v: f64) -> String {
    let (x, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let digits = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{x:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    s + unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(transport: Transport, mode: Mode, payload: usize) -> Case {
        Case { transport, mode, payload }
    }

    #[test]
    fn every_row_is_drawn_and_shmring_stands_out() {
        let mut h = super::super::protocol::histogram();
        for v in [200, 210, 220, 400] {
            h.record(v).unwrap();
        }
        let spin = case(Transport::Shmring, Mode::Spin, 64);
        let pipe = case(Transport::Pipe, Mode::Blocking, 64);
        let stream = case(Transport::UnixSocket, Mode::Stream, 64);
        let rows = vec![
            Row { rtt_p50_ns: Some(210), rtt_p99_ns: Some(400), ..Row::empty(&spin, None) },
            Row { rtt_p50_ns: Some(40_000), rtt_p99_ns: Some(60_000), ..Row::empty(&pipe, None) },
            Row { msgs_per_s: Some(1.4e6), bytes_per_s: Some(9e7), ..Row::empty(&stream, None) },
            Row::empty(&case(Transport::PosixMq, Mode::Stream, 65536), Some("not measured".into())),
        ];
        let path = std::env::temp_dir().join(format!("shmring-plot-test-{}.svg", std::process::id()));
        let drawn = draw(&path, &rows, &[(spin, h.clone()), (pipe, h)]);
        let svg = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        drawn.unwrap();
        let svg = svg.unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for text in
            ["shmring spin 64 B", "pipe blocking 64 B", "unix-socket stream 64 B", "shmring spin 64 B ping-pong"]
        {
            assert!(svg.contains(text), "no {text:?} in the plot");
        }
        // A row that measured nothing gets no bar; shmring's bars are red, the others grey.
        assert!(!svg.contains("posix-mq"));
        assert!(svg.contains("#D62728") && svg.contains("#787878"));
    }

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(si(100.0), "100");
        assert_eq!(si(1500.0), "1.5k");
        assert_eq!(si(20e6), "20M");
        assert_eq!(si(1e9), "1G");
    }
}
