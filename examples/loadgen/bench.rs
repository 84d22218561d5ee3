//! What every scenario shares: the binary and the options, a fresh server with its pairs of
//! friends set up, one measured load run, the integrity check of its report, repetition over
//! `--runs`, and the RSS printout of `--hold`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{BusFigures, Nodes};
use crate::driver::{Driver, DriverOptions, LoadReport, LoadSpec, Placement, SetupReport};
use crate::options::Options;
use crate::system::{self, Pinning, ServerOptions};

/// What the scenarios share: the binary, the pinning, the options.
pub struct Bench {
    pub binary: PathBuf,
    pub options: Options,
    pub source_ips: Vec<Ipv4Addr>,
    pub pinned: Option<Pinning>,
}

/// A fresh server with `pairs` pairs of friends (plus `lone` idle clients) set up.
pub struct Stage {
    pub server: Nodes,
    pub driver: Driver,
    pub setup: SetupReport,
    /// Percent busy of each core during the setup.
    pub setup_cores: Vec<f64>,
    /// CPU time the server and the load generator used for the setup.
    pub setup_server_cpu: Duration,
    pub setup_loadgen_cpu: Duration,
}

impl Bench {
    pub fn start_server(&mut self, connections: usize) -> Result<Nodes, String> {
        let server = Nodes::start(
            &self.options.layout,
            &ServerOptions {
                binary: &self.binary,
                listen: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
                extra_args: Vec::new(),
                max_connections: connections.max(16),
                pin: self.options.pin,
                nice: self.options.nice,
                fifo: self.options.fifo,
            },
        )?;
        self.pinned = Some(server.pinned());
        Ok(server)
    }

    pub fn driver(&self, server: &Nodes) -> Result<Driver, String> {
        Driver::new(DriverOptions {
            addrs: server.addrs.clone(),
            placement: self.options.placement,
            connect_concurrency: self.options.connecting,
            source_ips: self.source_ips.clone(),
        })
        .map_err(|e| format!("poll: {e}"))
    }

    /// Whether the server side is more than one node without a bus (then rows say so, and
    /// add the cluster's figures).
    pub fn is_cluster(&self) -> bool {
        !self.options.layout.is_single()
    }

    /// What the parameters column adds for a cluster layout ("" for one node without a bus).
    pub fn layout_note(&self) -> String {
        let layout = &self.options.layout;
        if layout.is_single() {
            return String::new();
        }
        let nodes = match layout.nodes {
            1 => "1 node".to_owned(),
            n => format!("{n} nodes"),
        };
        let bus = if layout.cluster { " + Redis" } else { "" };
        let placement = if layout.reuse_port {
            "one port, kernel-placed"
        } else if layout.nodes == 1 {
            "same node"
        } else {
            match self.options.placement {
                Placement::Same => "pairs on one node",
                Placement::Cross => "pairs across nodes",
            }
        };
        format!(", {nodes}{bus}, {placement}")
    }

    pub fn stage(&mut self, pairs: usize, lone: usize) -> Result<Stage, String> {
        let server = self.start_server(2 * pairs + lone)?;
        let mut driver = self.driver(&server)?;
        driver.add_pairs(pairs);
        driver.add_lone(lone);
        let before = system::core_jiffies();
        let server_before = server.cpu_time();
        let own_before = system::own_cpu_time();
        let setup = driver.establish(Duration::from_secs(120))?;
        let setup_cores = system::core_busy_percent(&before, &system::core_jiffies());
        if self.options.layout.reuse_port
            && let Some(figures) = server.bus_figures()?
        {
            let sessions: Vec<String> = figures.sessions.iter().map(u64::to_string).collect();
            eprintln!("kernel-placed: sessions per node {}", sessions.join(" / "));
        }
        Ok(Stage {
            setup_server_cpu: server.cpu_time().saturating_sub(server_before),
            setup_loadgen_cpu: system::own_cpu_time().saturating_sub(own_before),
            server,
            driver,
            setup,
            setup_cores,
        })
    }

    pub fn messages_per_sender(&self, senders: usize, default_total: u64) -> u64 {
        self.options
            .messages
            .unwrap_or(default_total / senders as u64)
            .max(1)
    }
}

/// A throughput measurement: the load report plus both processes' CPU use during it.
pub struct Throughput {
    pub report: LoadReport,
    /// All nodes together.
    pub server_cpu: f64,
    /// `redis-server`'s, when there is one.
    pub redis_cpu: Option<f64>,
    /// What crossed the bus during the run, when there is one.
    pub bus: Option<BusFigures>,
    pub loadgen_cpu: f64,
    /// Percent busy of the server's and the load generator's cores (all processes, softirq
    /// included).
    pub server_core: f64,
    pub loadgen_core: f64,
}

impl Throughput {
    pub fn msgs_per_sec(&self) -> f64 {
        self.report.messages as f64 / self.report.elapsed.as_secs_f64()
    }

    /// redis-server's CPU per 1,000 messages delivered, in µs.
    pub fn redis_us_per_1000(&self) -> Option<f64> {
        self.redis_cpu.map(|cpu| 1e9 * cpu / self.msgs_per_sec())
    }

    /// For a run's line: Redis's CPU and what crossed the bus ("" without a bus).
    pub fn cluster_note(&self) -> String {
        let (Some(redis_cpu), Some(bus)) = (self.redis_cpu, &self.bus) else {
            return String::new();
        };
        // Without a ref a cross-node MESSAGE is two records: the message and its answer.
        format!(
            "; redis-server {:.0} % ({:.1} µs per 1,000 msgs); bus: {} records in {} PUBLISHes \
             ({:.1} per PUBLISH), {} failures",
            100.0 * redis_cpu,
            self.redis_us_per_1000().unwrap_or(f64::NAN),
            bus.records_sent,
            bus.publishes,
            bus.records_sent as f64 / bus.publishes.max(1) as f64,
            bus.failures,
        )
    }
}

pub fn measure(stage: &mut Stage, spec: &LoadSpec) -> Result<Throughput, String> {
    let bus_before = stage.server.bus_figures()?;
    let redis_before = stage.server.redis_cpu_time();
    let server_before = stage.server.cpu_time();
    let own_before = system::own_cpu_time();
    let cores_before = system::core_jiffies();
    let report = stage.driver.run_load(spec)?;
    let seconds = report.elapsed.as_secs_f64();
    let cores = system::core_busy_percent(&cores_before, &system::core_jiffies());
    let server_cpu = (stage.server.cpu_time() - server_before).as_secs_f64() / seconds;
    let loadgen_cpu = (system::own_cpu_time() - own_before).as_secs_f64() / seconds;
    let redis_cpu = stage
        .server
        .redis_cpu_time()
        .zip(redis_before)
        .map(|(after, before)| (after - before).as_secs_f64() / seconds);
    if !stage.server.is_running() {
        return Err("the server exited during the run".into());
    }
    let bus = match (stage.server.bus_figures()?, bus_before) {
        (Some(after), Some(before)) => Some(after.since(&before)),
        _ => None,
    };
    Ok(Throughput {
        report,
        server_cpu,
        redis_cpu,
        bus,
        loadgen_cpu,
        server_core: cores.get(system::SERVER_CORE).copied().unwrap_or(f64::NAN),
        loadgen_core: cores.get(system::LOADGEN_CORE).copied().unwrap_or(f64::NAN),
    })
}

/// Runs `measure` `runs` times, collecting values and the union of their checks.
pub fn repeat(
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

pub fn check_of(report: &LoadReport, expected: u64, with_ref: bool) -> (String, bool) {
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

/// Prints the server's RSS at the end of a run and then each second for `seconds`, with every
/// connection still open and idle.
pub fn print_rss_while_idle(server: &Nodes, seconds: u64) -> Result<(), String> {
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
