//! Turning outcomes into rows, and rows into a table or JSON.

use serde::Serialize;

use super::case::{Case, bytes};
use super::protocol::Outcome;

/// One line of the results: either a round-trip row (RTT filled in) or a rate row: streaming,
/// or calls in flight (rates filled in). `None` is printed as `-` in the table and `null` in
/// JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub transport: &'static str,
    pub mode: &'static str,
    pub payload_bytes: u64,
    pub rtt_p50_ns: Option<u64>,
    pub rtt_p99_ns: Option<u64>,
    pub msgs_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    /// Why the row is empty, or another remark; table only.
    #[serde(skip)]
    pub note: Option<String>,
    /// Whether the row reports rates (its case measures a rate); table only, which groups them.
    #[serde(skip)]
    pub rate: bool,
}

impl Row {
    /// An empty row for `case`.
    pub(crate) fn empty(case: &Case, note: Option<String>) -> Row {
        Row {
            transport: case.transport.name(),
            mode: case.mode.name(),
            payload_bytes: case.payload as u64,
            rtt_p50_ns: None,
            rtt_p99_ns: None,
            msgs_per_s: None,
            bytes_per_s: None,
            note,
            rate: case.measures_rate(),
        }
    }

    /// The row for `case` given what it measured.
    pub(crate) fn new(case: &Case, outcome: Outcome) -> Row {
        match outcome {
            Outcome::Rtt(hist) => Row {
                rtt_p50_ns: Some(hist.value_at_quantile(0.50)),
                rtt_p99_ns: Some(hist.value_at_quantile(0.99)),
                ..Row::empty(case, None)
            },
            Outcome::Stream(t) => {
                let secs = t.elapsed.as_secs_f64().max(1e-9);
                let rate = t.msgs as f64 / secs;
                Row { msgs_per_s: Some(rate), bytes_per_s: Some(rate * case.payload as f64), ..Row::empty(case, None) }
            }
            Outcome::NotMeasured(why) => Row::empty(case, Some(format!("not measured: {why}"))),
        }
    }
}

/// Nanoseconds with a unit that keeps 3 significant digits.
fn duration_ns(ns: u64) -> String {
    let ns = ns as f64;
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.2} µs", ns / 1e3),
        ns if ns < 1e9 => format!("{:.2} ms", ns / 1e6),
        ns => format!("{:.2} s", ns / 1e9),
    }
}

/// A rate with an SI prefix: `12.3 M/s`.
fn rate(per_s: f64, unit: &str) -> String {
    let (value, prefix) = match per_s {
        r if r >= 1e9 => (r / 1e9, "G"),
        r if r >= 1e6 => (r / 1e6, "M"),
        r if r >= 1e3 => (r / 1e3, "k"),
        r => (r, ""),
    };
    format!("{value:.2} {prefix}{unit}/s")
}

/// A byte rate with a binary prefix: `1.23 GiB/s`.
fn byte_rate(per_s: f64) -> String {
    format!("{}/s", indicatif::HumanBytes(per_s as u64))
}

/// Renders the rows as an aligned text table followed by numbered notes.
pub(crate) fn table(rows: &[Row]) -> String {
    const HEADERS: [&str; 7] = ["transport", "mode", "payload", "rtt p50", "rtt p99", "msgs/s", "bytes/s"];
    let dash = || "-".to_owned();
    let mut notes: Vec<&str> = Vec::new();
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let mut transport = r.transport.to_owned();
            if let Some(note) = &r.note {
                let i = notes.iter().position(|n| *n == note).unwrap_or_else(|| {
                    notes.push(note);
                    notes.len() - 1
                });
                transport = format!("{transport} [{}]", i + 1);
            }
            [
                transport,
                r.mode.to_owned(),
                bytes(r.payload_bytes),
                r.rtt_p50_ns.map_or_else(dash, duration_ns),
                r.rtt_p99_ns.map_or_else(dash, duration_ns),
                r.msgs_per_s.map_or_else(dash, |v| rate(v, "msg")),
                r.bytes_per_s.map_or_else(dash, byte_rate),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            // Text columns left-aligned, numbers right-aligned.
            if i < 2 {
                out.push_str(&format!("{cell}{pad}  "));
            } else {
                out.push_str(&format!("{pad}{cell}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&HEADERS);
    let mut previous_rate = None;
    for (row, cells) in rows.iter().zip(&cells) {
        if previous_rate.is_some_and(|p| p != row.rate) {
            out.push('\n');
        }
        previous_rate = Some(row.rate);
        out.push_str(&line(&cells.each_ref().map(String::as_str)));
    }
    for (i, note) in notes.iter().enumerate() {
        out.push_str(&format!("[{}] {note}\n", i + 1));
    }
    out
}

/// Renders the rows as a pretty-printed JSON array.
pub(crate) fn json(rows: &[Row]) -> Result<String, String> {
    serde_json::to_string_pretty(rows).map_err(|e| format!("encoding JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::case::{Mode, Transport};

    fn case(mode: Mode, payload: usize) -> Case {
        Case { transport: Transport::Pipe, mode, payload }
    }

    #[test]
    fn json_rows_have_exactly_the_documented_keys() {
        let rows =
            [Row::empty(&case(Mode::Blocking, 64), None), Row::empty(&case(Mode::Stream, 65536), Some("why".into()))];
        let value: serde_json::Value = serde_json::from_str(&json(&rows).unwrap()).unwrap();
        let objects = value.as_array().unwrap();
        assert_eq!(objects.len(), 2);
        let mut keys: Vec<&str> = objects[1].as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["bytes_per_s", "mode", "msgs_per_s", "payload_bytes", "rtt_p50_ns", "rtt_p99_ns", "transport"]
        );
        assert_eq!(objects[1]["mode"], "stream");
        assert!(objects[1]["msgs_per_s"].is_null());
    }

    #[test]
    fn table_aligns_and_numbers_notes() {
        let mut measured = Row::empty(&case(Mode::Stream, 64), None);
        measured.msgs_per_s = Some(2.5e6);
        measured.bytes_per_s = Some(2.5e6 * 64.0);
        let rows = [measured, Row::empty(&case(Mode::Stream, 65536), Some("why".into()))];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("2.50 Mmsg/s") && lines[1].contains("152.59 MiB/s"));
        assert!(lines[2].starts_with("pipe [1]") && lines[2].contains("64 KiB"));
        assert_eq!(lines[3], "[1] why");
        // Right-aligned numeric columns end in the same place.
        let width = |l: &str| l.chars().count();
        assert_eq!(width(lines[0]), width(lines[1]));
        assert_eq!(width(lines[1]), width(lines[2]));
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(bytes(8), "8 B");
        assert_eq!(bytes(65536), "64 KiB");
        assert_eq!(duration_ns(812), "812 ns");
        assert_eq!(duration_ns(45_250), "45.25 µs");
        assert_eq!(rate(1.5e9, "msg"), "1.50 Gmsg/s");
    }
}
