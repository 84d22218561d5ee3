//! Load generator for SecChat: drives the real release `secchat` over loopback and prints a
//! table of what it measured against each scenario's target.
//!
//! ```sh
//! cargo run --release --example loadgen                 # every scenario, once
//! cargo run --release --example loadgen -- --runs 2     # every scenario twice, medians
//! cargo run --release --example loadgen -- throughput --size 4096 --ref
//! cargo run --release --example loadgen -- setup --runs 5 --baseline old/secchat  # A/B
//! cargo run --release --example loadgen -- --help
//! ```
//!
//! The server runs under `taskset -c 0` with unlimited rates; the load generator pins itself to
//! core 1. Every scenario starts a fresh server. Every message carries its sequence number after
//! the armor header line and a filler derived from it: each one is checked to arrive once, in
//! order and intact, and a run with any fault is reported as failed (exit status 1).

mod driver;
mod payload;
mod system;
mod ws;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use driver::{Driver, DriverOptions, LoadReport, LoadSpec, Mode, SetupReport};
use system::{Pinning, Server, ServerOptions};

const USAGE: &str = "\
loadgen: drive the release secchat binary over loopback and print a table

Usage: cargo run --release --example loadgen -- [SCENARIO...] [FLAGS]

Scenarios (default: all of them, in this order):
  setup        connection + friend handshake rate with --setup-pairs pairs
  rss          server RSS per idle connection at 5,000 and 10,000 connections
  throughput   512 B and 4 KiB, without and with ref, --pairs pairs, --window in flight
  scale        throughput at 10,000 connections: --pairs active among them, and all active
               (against --pairs pairs with as many messages in flight in total)
  latency      p50/p99/p999 at --rate messages/s offered, from the scheduled send time
  custom       one throughput run (or latency with --rate) with exactly the flags given

Flags:
  --pairs P          pairs of friends for throughput/latency/custom (default 50: 100 connections)
  --messages M       messages per sender in throughput runs (default: 2,000,000 in total)
  --size S           payload bytes, JSON text between the quotes (custom; default 512)
  --window W         messages in flight per sender (default 32)
  --ref              custom: messages carry a ref, so the server ACKs each one
  --rate R           latency/custom: offered messages per second in total (default 10000)
  --duration SECS    latency: how long to offer load (default 10)
  --setup-pairs N    setup: pairs to set up (default 5000: 10,000 connections)
  --runs N           repeat every measurement N times and report the median (default 1)
  --server PATH      the secchat binary (default: target/release/secchat, built first)
  --source-ips N     spread connections over 127.0.0.1 .. 127.0.0.N
  --connecting N     connections between connect() and their CONNECT reply at most (default
                     100)
  --baseline PATH    compare with another secchat binary (an older build): every round runs
                     each scenario on both, alternating which goes first; prints both tables
                     and, per measurement, this build's value over the baseline's in every
                     round, their median, and in how many rounds this build did better. On a
                     noisy machine, ratios from alternated runs hold where absolute figures
                     drift
  --no-pin           do not pin the server and the load generator to cores
  --nice N           run the server and the load generator at nice value N (e.g. -10, needs
                     root): on a shared machine, keeps other jobs from taking their cores
  --fifo             run the server under SCHED_FIFO (needs root): on a shared machine it then
                     runs as soon as a packet arrives, approximating a quiet machine for the
                     latency scenario (the kernel still leaves other jobs 5 % of the core)
  --wait-quiet SECS  before each run, wait up to SECS for both cores to be 95 % idle (shared
                     machines); the background load seen is printed either way
  --hold SECS        throughput runs: keep every connection open and idle for SECS after the
                     run and print the server's RSS each second (does memory go back?)
";

#[derive(Clone)]
struct Options {
    scenarios: Vec<String>,
    pairs: usize,
    messages: Option<u64>,
    size: usize,
    window: u64,
    with_ref: bool,
    rate: Option<f64>,
    duration: f64,
    setup_pairs: usize,
    runs: usize,
    server: Option<PathBuf>,
    source_ips: usize,
    pin: bool,
    wait_quiet: u64,
    connecting: usize,
    nice: i32,
    fifo: bool,
    hold: u64,
    baseline: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        scenarios: Vec::new(),
        pairs: 50,
        messages: None,
        size: 512,
        window: 32,
        with_ref: false,
        rate: None,
        duration: 10.0,
        setup_pairs: 5_000,
        runs: 1,
        server: None,
        source_ips: 0,
        pin: true,
        wait_quiet: 0,
        connecting: 100,
        nice: 0,
        fifo: false,
        hold: 0,
        baseline: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        fn number<T: std::str::FromStr>(name: &str, text: String) -> Result<T, String> {
            text.parse()
                .map_err(|_| format!("{name}: not a number: {text:?}"))
        }
        match arg.as_str() {
            "--help" | "-h" => return Err(String::new()),
            "--pairs" => options.pairs = number(&arg, value(&arg)?)?,
            "--messages" => options.messages = Some(number(&arg, value(&arg)?)?),
            "--size" => options.size = number(&arg, value(&arg)?)?,
            "--window" => options.window = number(&arg, value(&arg)?)?,
            "--ref" => options.with_ref = true,
            "--rate" => options.rate = Some(number(&arg, value(&arg)?)?),
            "--duration" => options.duration = number(&arg, value(&arg)?)?,
            "--setup-pairs" => options.setup_pairs = number(&arg, value(&arg)?)?,
            "--runs" => options.runs = number::<usize>(&arg, value(&arg)?)?.max(1),
            "--server" => options.server = Some(PathBuf::from(value(&arg)?)),
            "--source-ips" => options.source_ips = number(&arg, value(&arg)?)?,
            "--no-pin" => options.pin = false,
            "--connecting" => options.connecting = number::<usize>(&arg, value(&arg)?)?.max(1),
            "--fifo" => options.fifo = true,
            "--nice" => options.nice = number(&arg, value(&arg)?)?,
            "--wait-quiet" => options.wait_quiet = number(&arg, value(&arg)?)?,
            "--hold" => options.hold = number(&arg, value(&arg)?)?,
            "--baseline" => options.baseline = Some(PathBuf::from(value(&arg)?)),
            // cargo bench passes this to every bench target; harmless here.
            "--bench" => {}
            scenario
            @ ("all" | "setup" | "rss" | "throughput" | "scale" | "latency" | "custom") => {
                options.scenarios.push(scenario.to_owned())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.scenarios.is_empty() || options.scenarios.iter().any(|s| s == "all") {
        options.scenarios = ["setup", "rss", "throughput", "scale", "latency"]
            .map(String::from)
            .to_vec();
    }
    if options.pairs == 0 || options.window == 0 || options.setup_pairs == 0 {
        return Err("--pairs, --window and --setup-pairs must be positive".into());
    }
    Ok(options)
}

/// One line of the final table.
struct Row {
    measurement: String,
    parameters: String,
    /// One value per run.
    values: Vec<f64>,
    unit: &'static str,
    target: Option<Target>,
    /// Integrity and other notes ("ok" when every message was checked and nothing went wrong).
    check: String,
    failed: bool,
}

#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Row {
    fn median(&self) -> f64 {
        median_of(&self.values)
    }

    /// Latencies and memory: a smaller value is the better one.
    fn lower_is_better(&self) -> bool {
        matches!(self.unit, "µs" | "KiB" | "MiB")
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

fn format_value(value: f64, unit: &str) -> String {
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

fn print_table(rows: &[Row]) {
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

/// The comparison with `--baseline`: per measurement, this build's value over the baseline's in
/// each round (rounds pair up because they ran back to back), and how often this build did
/// better.
fn print_comparison(baseline: &[Row], under_test: &[Row]) {
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

fn joined(values: &[f64], format: impl Fn(f64) -> String) -> String {
    values
        .iter()
        .map(|&value| format(value))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn print_cells(header: &[&str], cells: &[Vec<String>]) {
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

/// What the scenarios share: the binary, the pinning, the options.
struct Bench {
    binary: PathBuf,
    options: Options,
    source_ips: Vec<Ipv4Addr>,
    pinned: Option<Pinning>,
}

/// A fresh server with `pairs` pairs of friends (plus `lone` idle clients) set up.
struct Stage {
    server: Server,
    driver: Driver,
    setup: SetupReport,
    /// Percent busy of each core during the setup.
    setup_cores: Vec<f64>,
    /// CPU time the server and the load generator used for the setup.
    setup_server_cpu: Duration,
    setup_loadgen_cpu: Duration,
}

impl Bench {
    fn start_server(&mut self, connections: usize) -> Result<Server, String> {
        let server = Server::start(&ServerOptions {
            binary: &self.binary,
            max_connections: connections.max(16),
            pin: self.options.pin,
            nice: self.options.nice,
            fifo: self.options.fifo,
        })?;
        self.pinned = Some(server.pinned);
        Ok(server)
    }

    fn driver(&self, server: &Server) -> Result<Driver, String> {
        Driver::new(DriverOptions {
            addr: server.addr,
            connect_concurrency: self.options.connecting,
            source_ips: self.source_ips.clone(),
        })
        .map_err(|e| format!("poll: {e}"))
    }

    fn stage(&mut self, pairs: usize, lone: usize) -> Result<Stage, String> {
        let server = self.start_server(2 * pairs + lone)?;
        let mut driver = self.driver(&server)?;
        driver.add_pairs(pairs);
        driver.add_lone(lone);
        let before = system::core_jiffies();
        let server_before = server.cpu_time();
        let own_before = system::own_cpu_time();
        let setup = driver.establish(Duration::from_secs(120))?;
        let setup_cores = system::core_busy_percent(&before, &system::core_jiffies());
        Ok(Stage {
            setup_server_cpu: server.cpu_time().saturating_sub(server_before),
            setup_loadgen_cpu: system::own_cpu_time().saturating_sub(own_before),
            server,
            driver,
            setup,
            setup_cores,
        })
    }

    fn messages_per_sender(&self, senders: usize, default_total: u64) -> u64 {
        self.options
            .messages
            .unwrap_or(default_total / senders as u64)
            .max(1)
    }
}

/// A throughput measurement: the load report plus both processes' CPU use during it.
struct Throughput {
    report: LoadReport,
    server_cpu: f64,
    loadgen_cpu: f64,
    /// Percent busy of the server's and the load generator's cores (all processes, softirq
    /// included).
    server_core: f64,
    loadgen_core: f64,
}

impl Throughput {
    fn msgs_per_sec(&self) -> f64 {
        self.report.messages as f64 / self.report.elapsed.as_secs_f64()
    }
}

fn measure(stage: &mut Stage, spec: &LoadSpec) -> Result<Throughput, String> {
    let server_before = stage.server.cpu_time();
    let own_before = system::own_cpu_time();
    let cores_before = system::core_jiffies();
    let report = stage.driver.run_load(spec)?;
    let seconds = report.elapsed.as_secs_f64();
    let cores = system::core_busy_percent(&cores_before, &system::core_jiffies());
    let server_cpu = (stage.server.cpu_time() - server_before).as_secs_f64() / seconds;
    let loadgen_cpu = (system::own_cpu_time() - own_before).as_secs_f64() / seconds;
    if !stage.server.is_running() {
        return Err("the server exited during the run".into());
    }
    Ok(Throughput {
        report,
        server_cpu,
        loadgen_cpu,
        server_core: cores.get(system::SERVER_CORE).copied().unwrap_or(f64::NAN),
        loadgen_core: cores.get(system::LOADGEN_CORE).copied().unwrap_or(f64::NAN),
    })
}

/// Runs `measure` `runs` times, collecting values and the union of their checks.
fn repeat(
    runs: usize,
    wait_quiet: u64,
    mut measure: impl FnMut(usize) -> Result<(Vec<f64>, String, bool), String>,
) -> (Vec<Vec<f64>>, String, bool) {
    let mut values: Vec<Vec<f64>> = Vec::new();
    let mut checks: Vec<String> = Vec::new();
    let mut failed = false;
    for run in 0..runs {
        let busy = system::wait_until_quiet(Duration::from_secs(wait_quiet));
        let busy: Vec<String> = busy.iter().map(|b| format!("{b:.0} %")).collect();
        eprintln!(
            "background load before run {}: cores busy {}",
            run + 1,
            busy.join(", ")
        );
        match measure(run) {
            Ok((run_values, check, run_failed)) => {
                for (i, value) in run_values.into_iter().enumerate() {
                    if values.len() <= i {
                        values.push(Vec::new());
                    }
                    values[i].push(value);
                }
                failed |= run_failed;
                if !checks.contains(&check) {
                    checks.push(check);
                }
            }
            Err(error) => {
                eprintln!("loadgen: run {} failed: {error}", run + 1);
                failed = true;
                checks.push(format!("FAILED: {error}"));
            }
        }
    }
    (values, checks.join("; "), failed)
}

fn check_of(report: &LoadReport, expected: u64, with_ref: bool) -> (String, bool) {
    let mut problems = Vec::new();
    if report.messages != expected {
        problems.push(format!("{} of {expected} delivered", report.messages));
    }
    if with_ref && report.acks != expected {
        problems.push(format!("{} of {expected} ACKed", report.acks));
    }
    if report.faults.total() > 0 {
        problems.push(report.faults.describe());
    }
    if problems.is_empty() {
        (format!("ok: {expected} in order, intact"), false)
    } else {
        (format!("FAILED: {}", problems.join(", ")), true)
    }
}

fn scenario_setup(bench: &mut Bench, rows: &mut Vec<Row>) {
    let pairs = bench.options.setup_pairs;
    let (values, check, failed) = repeat(bench.options.runs, bench.options.wait_quiet, |run| {
        let stage = bench.stage(pairs, 0)?;
        let seconds = stage.setup.elapsed.as_secs_f64();
        let core = |i: usize| stage.setup_cores.get(i).copied().unwrap_or(f64::NAN);
        let per_pair = |cpu: Duration| cpu.as_secs_f64() * 1e6 / pairs as f64;
        eprintln!(
            "setup run {}: {} pairs ({} connections) in {:.3} s; cores busy: server's {:.0} %, \
             loadgen's {:.0} %; CPU per pair: secchat {:.1} µs, loadgen {:.1} µs",
            run + 1,
            stage.setup.pairs,
            stage.setup.connections,
            seconds,
            core(system::SERVER_CORE),
            core(system::LOADGEN_CORE),
            per_pair(stage.setup_server_cpu),
            per_pair(stage.setup_loadgen_cpu),
        );
        drop(stage);
        Ok((
            vec![pairs as f64 / seconds, 2.0 * pairs as f64 / seconds],
            "ok: every pair befriended".to_owned(),
            false,
        ))
    });
    let parameters = format!(
        "{pairs} pairs, {} connections, {} connecting at once",
        2 * pairs,
        bench.options.connecting
    );
    let mut values = values.into_iter();
    rows.push(Row {
        measurement: "setup: connect + CONNECT + friend handshake".into(),
        parameters: parameters.clone(),
        values: values.next().unwrap_or_default(),
        unit: "pairs/s",
        target: Some(Target::AtLeast(10_000.0)),
        check: check.clone(),
        failed,
    });
    rows.push(Row {
        measurement: "setup: connections".into(),
        parameters,
        values: values.next().unwrap_or_default(),
        unit: "conn/s",
        target: None,
        check,
        failed,
    });
}

fn scenario_rss(bench: &mut Bench, rows: &mut Vec<Row>) {
    const STEPS: [usize; 2] = [5_000, 10_000];
    let (values, check, failed) = repeat(bench.options.runs, bench.options.wait_quiet, |run| {
        let server = bench.start_server(STEPS[1])?;
        let mut driver = bench.driver(&server)?;
        std::thread::sleep(Duration::from_millis(200));
        let baseline = server.rss_kib()?;
        let mut values = Vec::new();
        let mut total = 0;
        for step in STEPS {
            driver.add_lone(step - total);
            driver.establish(Duration::from_secs(120))?;
            total = step;
            // Let the server finish writing replies and the allocator settle.
            std::thread::sleep(Duration::from_millis(500));
            let rss = server.rss_kib()?;
            let per_connection = (rss.saturating_sub(baseline)) as f64 / step as f64;
            eprintln!(
                "rss run {}: baseline {baseline} KiB, {step} connections {rss} KiB, {per_connection:.2} KiB each",
                run + 1
            );
            values.push(per_connection);
            values.push(rss as f64 / 1024.0);
        }
        drop(driver);
        Ok((
            values,
            "ok: every connection has a session".to_owned(),
            false,
        ))
    });
    let mut values = values.into_iter();
    for step in STEPS {
        rows.push(Row {
            measurement: "server RSS per idle connection".into(),
            parameters: format!("{step} connections, CONNECTed, (VmRSS - baseline) / n"),
            values: values.next().unwrap_or_default(),
            unit: "KiB",
            target: Some(Target::AtMost(6.0)),
            check: check.clone(),
            failed,
        });
        rows.push(Row {
            measurement: "server RSS total".into(),
            parameters: format!("{step} connections"),
            values: values.next().unwrap_or_default(),
            unit: "MiB",
            target: (step == 10_000).then_some(Target::AtMost(100.0)),
            check: check.clone(),
            failed,
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn throughput_rows(
    bench: &mut Bench,
    rows: &mut Vec<Row>,
    label: &str,
    pairs: usize,
    active_pairs: usize,
    size: usize,
    window: u64,
    with_ref: bool,
    default_total: u64,
    targets: (Option<Target>, Option<Target>),
) -> Option<f64> {
    let senders = 2 * active_pairs.min(pairs);
    let messages = bench.messages_per_sender(senders, default_total);
    let expected = messages * senders as u64;
    let hold = bench.options.hold;
    let (values, check, failed) = repeat(bench.options.runs, bench.options.wait_quiet, |run| {
        let mut stage = bench.stage(pairs, 0)?;
        let result = measure(
            &mut stage,
            &LoadSpec {
                active_pairs,
                messages,
                payload_size: size,
                with_ref,
                mode: Mode::Closed { window },
            },
        )?;
        let (check, failed) = check_of(&result.report, expected, with_ref);
        let rate = result.msgs_per_sec();
        eprintln!(
            "{label} run {}: {:.0} msgs/s, {:.1} MB/s payload, CPU: secchat {:.0} % ({:.2} µs/msg), \
             loadgen {:.0} %; cores busy: server's {:.0} %, loadgen's {:.0} %; {check}",
            run + 1,
            rate,
            rate * size as f64 / 1e6,
            100.0 * result.server_cpu,
            1e6 * result.server_cpu / rate,
            100.0 * result.loadgen_cpu,
            result.server_core,
            result.loadgen_core,
        );
        print_rss_while_idle(&stage.server, hold)?;
        Ok((
            vec![
                rate,
                rate * size as f64 / 1e6,
                100.0 * result.server_cpu,
                100.0 * result.loadgen_cpu,
                result.server_core,
                result.loadgen_core,
            ],
            check,
            failed,
        ))
    });
    let connections = 2 * pairs;
    let parameters = format!(
        "{connections} conns ({} sending), {size} B, W={window}{}, {expected} msgs",
        senders,
        if with_ref { ", ref+ACK" } else { "" }
    );
    let mut values = values.into_iter();
    let rate = values.next().unwrap_or_default();
    let median_rate = median_of(&rate);
    let bytes = values.next().unwrap_or_default();
    let server_cpu = values.next().unwrap_or_default();
    let loadgen_cpu = values.next().unwrap_or_default();
    let server_core = values.next().unwrap_or_default();
    let loadgen_core = values.next().unwrap_or_default();
    let cpu_note = format!(
        "; CPU secchat {} % (core 0 busy {} %), loadgen {} % (core 1 busy {} %)",
        median_of(&server_cpu).round(),
        median_of(&server_core).round(),
        median_of(&loadgen_cpu).round(),
        median_of(&loadgen_core).round()
    );
    rows.push(Row {
        measurement: format!("{label}: messages routed"),
        parameters: parameters.clone(),
        values: rate,
        unit: "msgs/s",
        target: targets.0,
        check: format!("{check}{cpu_note}"),
        failed,
    });
    if targets.1.is_some() {
        rows.push(Row {
            measurement: format!("{label}: payload bytes routed"),
            parameters,
            values: bytes,
            unit: "MB/s",
            target: targets.1,
            check: check.clone(),
            failed,
        });
    }
    (!failed).then_some(median_rate)
}

/// Prints the server's RSS at the end of a run and then each second for `seconds`, with every
/// connection still open and idle.
fn print_rss_while_idle(server: &Server, seconds: u64) -> Result<(), String> {
    if seconds == 0 {
        return Ok(());
    }
    let mut samples = vec![server.rss_kib()?];
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(server.rss_kib()?);
    }
    let listed: Vec<String> = samples.iter().map(|kib| format!("{kib}")).collect();
    eprintln!(
        "RSS with every connection open and idle, at the end of the run then each second: {} KiB",
        listed.join(" / ")
    );
    Ok(())
}

fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

const THROUGHPUT_TOTAL: u64 = 2_000_000;

/// 512 B messages over `--pairs` pairs: the throughput row, and the baseline the scale scenario
/// compares with.
fn baseline_512(bench: &mut Bench, rows: &mut Vec<Row>) -> Option<f64> {
    let pairs = bench.options.pairs;
    let window = bench.options.window;
    throughput_rows(
        bench,
        rows,
        "throughput 512 B",
        pairs,
        pairs,
        512,
        window,
        false,
        THROUGHPUT_TOTAL,
        (Some(Target::AtLeast(700_000.0)), None),
    )
}

fn scenario_throughput(bench: &mut Bench, rows: &mut Vec<Row>) -> Option<f64> {
    let pairs = bench.options.pairs;
    let window = bench.options.window;
    let base = baseline_512(bench, rows);
    throughput_rows(
        bench,
        rows,
        "throughput 512 B + ref",
        pairs,
        pairs,
        512,
        window,
        true,
        THROUGHPUT_TOTAL,
        (Some(Target::AtLeast(500_000.0)), None),
    );
    throughput_rows(
        bench,
        rows,
        "throughput 4 KiB",
        pairs,
        pairs,
        4096,
        window,
        false,
        THROUGHPUT_TOTAL / 4,
        (None, Some(Target::AtLeast(600.0))),
    );
    throughput_rows(
        bench,
        rows,
        "throughput 4 KiB + ref",
        pairs,
        pairs,
        4096,
        window,
        true,
        THROUGHPUT_TOTAL / 4,
        (None, None),
    );
    base
}

/// Throughput at 10,000 connections against 100, changing nothing else:
/// - 100 of the 10,000 active, against the 512 B row (same senders, same window);
/// - all 10,000 active, against 100 connections with as many messages in flight in total.
///
/// The second pair is needed because all 10,000 active at the same window per sender also puts
/// 100 times the data in flight, which costs the kernel's copies of data no cache holds
/// (BENCHMARKS.md); the 512 B row stays in the table for that comparison too.
fn scenario_scale(bench: &mut Bench, rows: &mut Vec<Row>, base: Option<f64>) {
    const PAIRS: usize = 5_000;
    let pairs = bench.options.pairs;
    let window = bench.options.window;
    let base = base.or_else(|| baseline_512(bench, rows));
    let within_15_percent = |rate: Option<f64>| rate.map(|rate| Target::AtLeast(0.85 * rate));
    throughput_rows(
        bench,
        rows,
        "scale: 10,000 conns, 100 active",
        PAIRS,
        pairs,
        512,
        window,
        false,
        THROUGHPUT_TOTAL,
        (within_15_percent(base), None),
    );
    let same_in_flight = throughput_rows(
        bench,
        rows,
        "scale: 100 conns, in flight as 10,000 all active",
        pairs,
        pairs,
        512,
        window * PAIRS as u64 / pairs.max(1) as u64,
        false,
        THROUGHPUT_TOTAL,
        (None, None),
    );
    throughput_rows(
        bench,
        rows,
        "scale: 10,000 conns, all active",
        PAIRS,
        PAIRS,
        512,
        window,
        false,
        THROUGHPUT_TOTAL,
        (within_15_percent(same_in_flight), None),
    );
}

fn scenario_latency(bench: &mut Bench, rows: &mut Vec<Row>, rate: f64, pairs: usize) {
    let duration = bench.options.duration;
    let size = bench.options.size;
    let with_ref = bench.options.with_ref;
    let senders = 2 * pairs;
    let messages = ((rate * duration) as u64 / senders as u64).max(1);
    let expected = messages * senders as u64;
    let (values, check, failed) = repeat(bench.options.runs, bench.options.wait_quiet, |run| {
        let mut stage = bench.stage(pairs, 0)?;
        let result = measure(
            &mut stage,
            &LoadSpec {
                active_pairs: pairs,
                messages,
                payload_size: size,
                with_ref,
                mode: Mode::Open { rate },
            },
        )?;
        let (check, failed) = check_of(&result.report, expected, with_ref);
        let mut latencies = result.report.latencies_ns;
        latencies.sort_unstable();
        let quantile = |q: f64| {
            let rank = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
            latencies[rank - 1] as f64 / 1_000.0
        };
        let achieved = result.report.messages as f64 / result.report.elapsed.as_secs_f64();
        let values = vec![
            quantile(0.5),
            quantile(0.99),
            quantile(0.999),
            quantile(1.0),
            achieved,
        ];
        eprintln!(
            "latency run {}: p50 {:.1} µs, p99 {:.1} µs, p999 {:.1} µs, max {:.1} µs, {:.0} msgs/s, {check}",
            run + 1,
            values[0],
            values[1],
            values[2],
            values[3],
            achieved
        );
        Ok((values, check, failed))
    });
    let parameters = format!(
        "{rate:.0} msgs/s offered, {} conns, {size} B{}, {duration} s, {expected} msgs",
        2 * pairs,
        if with_ref { ", ref" } else { "" }
    );
    let mut values = values.into_iter();
    for (name, target) in [
        ("latency p50", None),
        ("latency p99", Some(Target::AtMost(250.0))),
        ("latency p999", None),
        ("latency max", None),
    ] {
        rows.push(Row {
            measurement: format!("{name} (from scheduled send)"),
            parameters: parameters.clone(),
            values: values.next().unwrap_or_default(),
            unit: "µs",
            target,
            check: check.clone(),
            failed,
        });
    }
}

fn scenario_custom(bench: &mut Bench, rows: &mut Vec<Row>) {
    let options = bench.options.clone();
    if let Some(rate) = options.rate {
        scenario_latency(bench, rows, rate, options.pairs);
        return;
    }
    throughput_rows(
        bench,
        rows,
        "custom",
        options.pairs,
        options.pairs,
        options.size,
        options.window,
        options.with_ref,
        THROUGHPUT_TOTAL,
        (None, None),
    );
}

fn run_scenarios(bench: &mut Bench, scenarios: &[String]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut base = None;
    for scenario in scenarios {
        eprintln!("loadgen: scenario {scenario} ({})", bench.binary.display());
        match scenario.as_str() {
            "setup" => scenario_setup(bench, &mut rows),
            "rss" => scenario_rss(bench, &mut rows),
            "throughput" => base = scenario_throughput(bench, &mut rows),
            "scale" => scenario_scale(bench, &mut rows, base),
            "latency" => {
                let rate = bench.options.rate.unwrap_or(10_000.0);
                let pairs = bench.options.pairs;
                scenario_latency(bench, &mut rows, rate, pairs)
            }
            "custom" => scenario_custom(bench, &mut rows),
            _ => {}
        }
    }
    rows
}

/// `--runs` rounds, each running every scenario once on the baseline and once on the build under
/// test, the first of the two alternating; returns (under test, baseline) with one value per
/// round in every row.
fn alternate_with(
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

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("loadgen: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let binary = match system::find_server_binary(options.server.clone()) {
        Ok(binary) => binary,
        Err(error) => {
            eprintln!("loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(baseline) = &options.baseline
        && !baseline.is_file()
    {
        eprintln!(
            "loadgen: --baseline {}: no such file (build the older commit first, e.g. in a git \
             worktree, and pass its target/release/secchat)",
            baseline.display()
        );
        return ExitCode::from(2);
    }
    // Unreadable: assume the usual default, which the warning below then names.
    let open_files = secchat::process_limits::raise_open_file_limit().unwrap_or(1024);
    if open_files < 12_000 {
        eprintln!(
            "loadgen: WARNING: only {open_files} open files allowed (ulimit -n); 10,000-connection scenarios will fail"
        );
    }
    if options.nice != 0 && !system::set_nice(options.nice) {
        eprintln!("loadgen: cannot set nice {} (needs root)", options.nice);
        return ExitCode::FAILURE;
    }
    let loadgen_pinned = options.pin
        && system::online_cores() >= 2
        && system::pin_current_thread(system::LOADGEN_CORE);
    let source_ips = (1..=options.source_ips.min(254))
        .map(|last| Ipv4Addr::new(127, 0, 0, last as u8))
        .collect();
    let mut bench = Bench {
        binary,
        options: options.clone(),
        source_ips,
        pinned: None,
    };
    let (rows, baseline_rows) = match &options.baseline {
        None => (run_scenarios(&mut bench, &options.scenarios), None),
        Some(baseline) => {
            let (under_test, baseline_rows) =
                alternate_with(&mut bench, baseline.clone(), &options.scenarios);
            (under_test, Some(baseline_rows))
        }
    };
    println!(
        "\nserver: {} (pinned: {}), loadgen pinned to core {}: {}, nice {}{}, runs per measurement: {}",
        bench.binary.display(),
        match bench.pinned {
            Some(Pinning::Taskset) => "taskset -c 0",
            Some(Pinning::Affinity) => "sched_setaffinity core 0",
            Some(Pinning::None) | None => "no",
        },
        system::LOADGEN_CORE,
        if loadgen_pinned { "yes" } else { "no" },
        options.nice,
        if options.fifo {
            ", server SCHED_FIFO"
        } else {
            ""
        },
        options.runs
    );
    if let (Some(baseline), Some(baseline_rows)) = (&options.baseline, &baseline_rows) {
        println!("\nbaseline: {}", baseline.display());
        print_table(baseline_rows);
        println!("\nunder test: {}", bench.binary.display());
        print_table(&rows);
        println!("\nunder test against baseline, round by round:");
        print_comparison(baseline_rows, &rows);
    } else {
        print_table(&rows);
    }
    let failed = rows
        .iter()
        .chain(baseline_rows.iter().flatten())
        .any(|row| row.failed);
    if failed {
        eprintln!("loadgen: some runs FAILED their checks (see the check column)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
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
