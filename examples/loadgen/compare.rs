//! `--baseline`: rounds that run every scenario on both binaries, alternating which goes first,
//! and the table comparing them round by round.

use std::path::PathBuf;

use crate::bench::Bench;
use crate::report::{Row, format_value, joined, median_of, print_cells};
use crate::scenarios::run_scenarios;

/// The comparison with `--baseline`: per measurement, this build's value over the baseline's in
/// each round (rounds pair up because they ran back to back), and how often this build did
/// better.
pub fn print_comparison(baseline: &[Row], under_test: &[Row]) {
    let header = [
        "measurement",
        "parameters",
        "baseline median",
        "median",
        "ratio per round",
        "median ratio",
        "better in",
    ];
    let cells: Vec<Vec<String>> = baseline
        .iter()
        .zip(under_test)
        .map(|(before, after)| {
            let (per_round, median, better) = match compare_rounds(before, after) {
                Some((ratios, better)) => (
                    joined(&ratios, |ratio| format!("{ratio:.2}")),
                    format!("{:.3}", median_of(&ratios)),
                    format!("{better} of {}", ratios.len()),
                ),
                None => (
                    "a run failed: rounds do not pair up".into(),
                    "-".into(),
                    "-".into(),
                ),
            };
            vec![
                after.measurement.clone(),
                after.parameters.clone(),
                format_value(before.median(), before.unit),
                format_value(after.median(), after.unit),
                per_round,
                median,
                better,
            ]
        })
        .collect();
    print_cells(&header, &cells);
}

/// This build's value over the baseline's, round by round, and in how many rounds it was the
/// better one (higher throughput, lower latency or memory); `None` when a failed run left one
/// side without its value for some round, so the values no longer pair up.
fn compare_rounds(before: &Row, after: &Row) -> Option<(Vec<f64>, usize)> {
    if before.values.len() != after.values.len() {
        return None;
    }
    let ratios: Vec<f64> = before
        .values
        .iter()
        .zip(&after.values)
        .map(|(b, a)| a / b)
        .collect();
    let better = ratios
        .iter()
        .filter(|&&ratio| {
            if after.lower_is_better() {
                ratio < 1.0
            } else {
                ratio > 1.0
            }
        })
        .count();
    Some((ratios, better))
}

/// `--runs` rounds, each running every scenario once on the baseline and once on the build under
/// test, the first of the two alternating; returns (under test, baseline) with one value per
/// round in every row.
pub fn alternate_with(
    bench: &mut Bench,
    baseline: PathBuf,
    scenarios: &[String],
) -> (Vec<Row>, Vec<Row>) {
    let under_test = bench.binary.clone();
    let rounds = bench.options.runs;
    bench.options.runs = 1;
    let mut test_rows: Vec<Row> = Vec::new();
    let mut baseline_rows: Vec<Row> = Vec::new();
    for round in 0..rounds {
        let baseline_first = round % 2 == 0;
        for is_baseline in [baseline_first, !baseline_first] {
            bench.binary = if is_baseline {
                baseline.clone()
            } else {
                under_test.clone()
            };
            let rows = run_scenarios(bench, scenarios);
            let into = if is_baseline {
                &mut baseline_rows
            } else {
                &mut test_rows
            };
            append_round(into, rows);
        }
    }
    bench.binary = under_test;
    bench.options.runs = rounds;
    (test_rows, baseline_rows)
}

/// Adds one round's rows to the rows of the rounds before (the same scenarios give the same rows
/// in the same order).
fn append_round(into: &mut Vec<Row>, round: Vec<Row>) {
    if into.is_empty() {
        *into = round;
        return;
    }
    for (row, new) in into.iter_mut().zip(round) {
        row.values.extend(new.values);
        row.failed |= new.failed;
        if !row.check.contains(&new.check) {
            row.check = format!("{}; {}", row.check, new.check);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(unit: &'static str, values: &[f64], check: &str) -> Row {
        Row {
            measurement: "m".into(),
            parameters: "p".into(),
            values: values.to_vec(),
            unit,
            target: None,
            check: check.into(),
            failed: false,
        }
    }

    #[test]
    fn rounds_append_values_in_order_and_keep_every_distinct_check() {
        let mut rows = Vec::new();
        append_round(&mut rows, vec![row("msgs/s", &[1.0], "ok")]);
        append_round(&mut rows, vec![row("msgs/s", &[2.0], "ok")]);
        let mut failing = row("msgs/s", &[3.0], "FAILED: 1 of 2 delivered");
        failing.failed = true;
        append_round(&mut rows, vec![failing]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].values, [1.0, 2.0, 3.0]);
        assert_eq!(rows[0].check, "ok; FAILED: 1 of 2 delivered");
        assert!(rows[0].failed);
    }

    #[test]
    fn higher_throughput_and_lower_latency_count_as_better() {
        let (ratios, better) = compare_rounds(
            &row("msgs/s", &[100.0, 100.0, 100.0], "ok"),
            &row("msgs/s", &[110.0, 90.0, 120.0], "ok"),
        )
        .unwrap();
        assert_eq!(ratios, [1.1, 0.9, 1.2]);
        assert_eq!(better, 2);
        let (ratios, better) = compare_rounds(
            &row("µs", &[100.0, 100.0], "ok"),
            &row("µs", &[80.0, 125.0], "ok"),
        )
        .unwrap();
        assert_eq!(ratios, [0.8, 1.25]);
        assert_eq!(better, 1);
        let one_run_missing = row("µs", &[80.0], "FAILED: setup stalled");
        assert!(compare_rounds(&row("µs", &[100.0, 100.0], "ok"), &one_run_missing).is_none());
    }
}
