//! The scenarios: what each one runs, and the rows it adds to the table.

use std::time::Duration;

use crate::bench::{Bench, check_of, measure, print_rss_while_idle, repeat};
use crate::driver::{LoadSpec, Mode};
use crate::report::{Row, Target, median_of};
use crate::system;

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
             loadgen {:.0} %; cores busy: server's {:.0} %, loadgen's {:.0} %; {check}{}",
            run + 1,
            rate,
            rate * size as f64 / 1e6,
            100.0 * result.server_cpu,
            1e6 * result.server_cpu / rate,
            100.0 * result.loadgen_cpu,
            result.server_core,
            result.loadgen_core,
            result.cluster_note(),
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
                1e6 * result.server_cpu / rate,
                result.redis_us_per_1000().unwrap_or(f64::NAN),
            ],
            check,
            failed,
        ))
    });
    let connections = 2 * pairs;
    let parameters = format!(
        "{connections} conns ({} sending), {size} B, W={window}{}, {expected} msgs{}",
        senders,
        if with_ref { ", ref+ACK" } else { "" },
        bench.layout_note()
    );
    let mut values = values.into_iter();
    let rate = values.next().unwrap_or_default();
    let median_rate = median_of(&rate);
    let bytes = values.next().unwrap_or_default();
    let server_cpu = values.next().unwrap_or_default();
    let loadgen_cpu = values.next().unwrap_or_default();
    let server_core = values.next().unwrap_or_default();
    let loadgen_core = values.next().unwrap_or_default();
    let server_per_message = values.next().unwrap_or_default();
    let redis_per_1000 = values.next().unwrap_or_default();
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
    if bench.is_cluster() {
        // Every node's CPU time, and Redis's: what one more node or one more hop costs.
        rows.push(Row {
            measurement: format!("{label}: CPU of all nodes per message"),
            parameters: parameters.clone(),
            values: server_per_message,
            unit: "µs/msg",
            target: None,
            check: check.clone(),
            failed,
        });
        rows.push(Row {
            measurement: format!("{label}: redis-server CPU per 1,000 messages"),
            parameters: parameters.clone(),
            values: redis_per_1000,
            unit: "µs",
            target: None,
            check: check.clone(),
            failed,
        });
    }
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
        let mut result = measure(
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
        let mut latencies = std::mem::take(&mut result.report.latencies_ns);
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
            "latency run {}: p50 {:.1} µs, p99 {:.1} µs, p999 {:.1} µs, max {:.1} µs, {:.0} msgs/s, \
             {check}{}",
            run + 1,
            values[0],
            values[1],
            values[2],
            values[3],
            achieved,
            result.cluster_note(),
        );
        Ok((values, check, failed))
    });
    let parameters = format!(
        "{rate:.0} msgs/s offered, {} conns, {size} B{}, {duration} s, {expected} msgs{}",
        2 * pairs,
        if with_ref { ", ref" } else { "" },
        bench.layout_note()
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

pub fn run_scenarios(bench: &mut Bench, scenarios: &[String]) -> Vec<Row> {
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
