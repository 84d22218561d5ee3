//! The final table: its rows, their targets, how values are formatted, and the median each row
//! reports.

/// One line of the final table.
pub struct Row {
    pub measurement: String,
    pub parameters: String,
    /// One value per run.
    pub values: Vec<f64>,
    pub unit: &'static str,
    pub target: Option<Target>,
    /// Integrity and other notes ("ok" when every message was checked and nothing went wrong).
    pub check: String,
    pub failed: bool,
}

#[derive(Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Row {
    pub fn median(&self) -> f64 {
        median_of(&self.values)
    }

    /// Latencies and memory: a smaller value is the better one.
    pub fn lower_is_better(&self) -> bool {
        matches!(self.unit, "µs" | "µs/msg" | "KiB" | "MiB")
    }

    fn verdict(&self) -> &'static str {
        let median = self.median();
        match self.target {
            None => "",
            Some(Target::AtLeast(t)) if median >= t => "yes",
            Some(Target::AtMost(t)) if median <= t => "yes",
            Some(_) => "NO",
        }
    }
}

pub fn format_value(value: f64, unit: &str) -> String {
    if value.is_nan() {
        return "-".into();
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let number = format!("{value:.digits$}");
    // Thousands separators for the integer part.
    let (integer, fraction) = number.split_once('.').unwrap_or((&number, ""));
    let mut grouped = String::new();
    for (i, c) in integer.chars().enumerate() {
        if i > 0 && (integer.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if !fraction.is_empty() {
        grouped.push('.');
        grouped.push_str(fraction);
    }
    format!("{grouped} {unit}")
}

pub fn print_table(rows: &[Row]) {
    let header = [
        "measurement",
        "parameters",
        "median",
        "runs",
        "target",
        "met",
        "check",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let target = match row.target {
                None => String::new(),
                Some(Target::AtLeast(t)) => format!("≥ {}", format_value(t, row.unit)),
                Some(Target::AtMost(t)) => format!("≤ {}", format_value(t, row.unit)),
            };
            vec![
                row.measurement.clone(),
                row.parameters.clone(),
                format_value(row.median(), row.unit),
                joined(&row.values, |v| format_value(v, "").trim().to_owned()),
                target,
                row.verdict().to_owned(),
                row.check.clone(),
            ]
        })
        .collect();
    print_cells(&header, &cells);
}

pub fn joined(values: &[f64], format: impl Fn(f64) -> String) -> String {
    values
        .iter()
        .map(|&value| format(value))
        .collect::<Vec<_>>()
        .join(" / ")
}

pub fn print_cells(header: &[&str], cells: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .filter_map(|c| c.get(i))
                .map(|cell| cell.chars().count())
                .chain(header.get(i).map(|h| h.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    println!();
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in cells {
        line(row);
    }
}

pub fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
