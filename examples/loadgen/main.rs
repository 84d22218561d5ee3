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
//!
//! - `options`: the command line
//! - `scenarios`: what each scenario runs and the rows it adds, on what `bench` shares (a fresh
//!   server with its pairs set up, one measured run, repetition over `--runs`)
//! - `report`: the table
//! - `compare`: `--baseline`, alternating rounds on two binaries and their comparison
//! - `driver`: the clients, one mio loop on one core; `payload` and `ws`: their messages and
//!   frames
//! - `system`: the server process, CPU pinning, CPU time and memory
//! - `cluster`: several nodes and their `redis-server` (`--nodes`, `--cluster`, `--reuse-port`)

mod bench;
mod cluster;
mod compare;
mod driver;
mod options;
mod payload;
mod report;
mod scenarios;
mod system;
mod ws;

use std::net::Ipv4Addr;
use std::process::ExitCode;

use bench::Bench;
use compare::{alternate_with, print_comparison};
use options::{USAGE, parse_options};
use report::print_table;
use scenarios::run_scenarios;
use system::Pinning;

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
