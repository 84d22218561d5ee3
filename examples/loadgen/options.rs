//! The command line: the usage text, the options it sets, and their parsing.

use std::path::PathBuf;

use crate::cluster::Layout;
use crate::driver::Placement;

pub const USAGE: &str = "\
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

More than one node (every scenario runs over them; the nodes and Redis share the server's core):
  --nodes N          start N secchat nodes joined through a redis-server the load generator
                     starts on a free port (--save '' --appendonly no); implies --cluster
  --cluster          start that redis-server and pass --cluster to the nodes, also with one node
                     (the bus on, every session in its directory)
  --placement P      same: both clients of a pair on one node (default); cross: on two nodes,
                     so every message crosses the bus (needs --nodes 2 or more)
  --reuse-port       the nodes listen on one port with --reuse-port on and every client connects
                     to it: the kernel places them (sessions per node are printed)
  --redis-server PATH  the redis-server binary (default: redis-server on the PATH)
With more than one node, or --cluster, each throughput row adds the nodes' CPU per message and
redis-server's CPU per 1,000 messages, and each run prints the records that crossed the bus.
";

#[derive(Clone)]
pub struct Options {
    pub scenarios: Vec<String>,
    pub pairs: usize,
    pub messages: Option<u64>,
    pub size: usize,
    pub window: u64,
    pub with_ref: bool,
    pub rate: Option<f64>,
    pub duration: f64,
    pub setup_pairs: usize,
    pub runs: usize,
    pub server: Option<PathBuf>,
    pub source_ips: usize,
    pub pin: bool,
    pub wait_quiet: u64,
    pub connecting: usize,
    pub nice: i32,
    pub fifo: bool,
    pub hold: u64,
    pub baseline: Option<PathBuf>,
    pub layout: Layout,
    pub placement: Placement,
}

pub fn parse_options() -> Result<Options, String> {
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
        layout: Layout {
            nodes: 1,
            cluster: false,
            reuse_port: false,
            redis_binary: PathBuf::from("redis-server"),
        },
        placement: Placement::Same,
    };
    let mut placement_given = false;
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
            "--nodes" => options.layout.nodes = number(&arg, value(&arg)?)?,
            "--cluster" => options.layout.cluster = true,
            "--reuse-port" => options.layout.reuse_port = true,
            "--redis-server" => options.layout.redis_binary = PathBuf::from(value(&arg)?),
            "--placement" => {
                placement_given = true;
                options.placement = match value(&arg)?.as_str() {
                    "same" => Placement::Same,
                    "cross" => Placement::Cross,
                    other => return Err(format!("--placement: same or cross, not {other:?}")),
                }
            }
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
    let layout = &mut options.layout;
    if layout.nodes == 0 {
        return Err("--nodes must be positive".into());
    }
    // Nodes without a bus could not reach one another's sessions.
    layout.cluster |= layout.nodes > 1;
    if options.placement == Placement::Cross && layout.nodes < 2 {
        return Err("--placement cross needs --nodes 2 or more".into());
    }
    if placement_given && layout.reuse_port {
        return Err("with --reuse-port the kernel places connections: no --placement".into());
    }
    Ok(options)
}
