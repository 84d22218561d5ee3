//! The server process under test and the bits of the operating system the load generator needs:
//! CPU pinning, the open-file limit, CPU time and resident memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The core the server is pinned to; the load generator takes [`LOADGEN_CORE`].
pub const SERVER_CORE: usize = 0;
pub const LOADGEN_CORE: usize = 1;

/// A low real-time priority: above every normal job, below the kernel's own real-time threads.
const FIFO_PRIORITY: libc::c_int = 10;

/// A running `secchat`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub pinned: Pinning,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Started under `taskset -c 0`.
    Taskset,
    /// `taskset` is missing: pinned with `sched_setaffinity` before `exec`.
    Affinity,
    /// Not pinned (`--no-pin`, or fewer than two cores).
    None,
}

pub struct ServerOptions<'a> {
    pub binary: &'a Path,
    /// `--listen` (port 0: any free port).
    pub listen: SocketAddr,
    /// Flags after the usual ones (`--cluster`, `--reuse-port`, `--metrics-listen`).
    pub extra_args: Vec<String>,
    pub max_connections: usize,
    pub pin: bool,
    /// The server's nice value (0: unchanged).
    pub nice: i32,
    /// Run the server under SCHED_FIFO (needs root).
    pub fifo: bool,
}

impl Server {
    /// Starts the server on a free loopback port and waits for it to announce its address.
    pub fn start(options: &ServerOptions<'_>) -> Result<Server, String> {
        let max_connections = options.max_connections.to_string();
        let listen = options.listen.to_string();
        let mut args = vec![
            "--listen",
            &listen,
            // Unlimited rates: the benchmark measures routing, not the token buckets.
            "--rate-messages",
            "0",
            "--rate-friend-requests",
            "0",
            "--max-connections",
            &max_connections,
            // Every client comes from loopback: the per-address limit would refuse most of them.
            "--max-connections-per-ip",
            "0",
            "--log-level",
            "warn",
        ];
        args.extend(options.extra_args.iter().map(String::as_str));
        let (mut child, pinned) = spawn_pinned(
            options.binary,
            &args,
            options.pin,
            options.nice,
            options.fifo,
        )?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| format!("{} printed nothing", options.binary.display()))?;
        let addr = first
            .split("http://")
            .nth(1)
            .map(|rest| rest.trim_end_matches('/'))
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| format!("cannot find the address in {first:?}"))?;
        // The logger writes to stdout: keep draining it so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[secchat] {line}");
            }
        });
        Ok(Server {
            child,
            addr,
            pinned,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the server to stop (SIGTERM) without waiting: several can then stop at once.
    pub fn terminate(&self) {
        // SAFETY: sending a signal to our own child, whose pid we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .map_err(|e| format!("/proc/{}/status: {e}", self.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS line".to_owned())
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        process_cpu_time(&format!("/proc/{}/stat", self.pid())).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_pinned(
    binary: &Path,
    args: &[&str],
    pin: bool,
    nice: i32,
    fifo: bool,
) -> Result<(Child, Pinning), String> {
    use std::os::unix::process::CommandExt;
    let command = |program: &Path, pin_here: bool| {
        let mut command = Command::new(program);
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        // SAFETY: the closure runs between fork and exec and only calls setpriority,
        // sched_setscheduler and sched_setaffinity, which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if nice != 0 {
                    set_nice(nice);
                }
                if fifo {
                    let param = libc::sched_param {
                        sched_priority: FIFO_PRIORITY,
                    };
                    if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if pin_here {
                    pin_current_thread(SERVER_CORE);
                }
                Ok(())
            });
        }
        command
    };
    if !pin || online_cores() < 2 {
        let child = command(binary, false)
            .args(args)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        return Ok((child, Pinning::None));
    }
    let mut taskset = command(Path::new("taskset"), false);
    taskset
        .arg("-c")
        .arg(SERVER_CORE.to_string())
        .arg(binary)
        .args(args);
    match taskset.spawn() {
        Ok(child) => Ok((child, Pinning::Taskset)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("loadgen: taskset not found; pinning the server with sched_setaffinity");
            let child = command(binary, true)
                .args(args)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
            Ok((child, Pinning::Affinity))
        }
        Err(e) => Err(format!("cannot start taskset: {e}")),
    }
}

/// Sets the calling process's nice value; false if that was refused (a negative value needs
/// root or CAP_SYS_NICE).
pub fn set_nice(nice: i32) -> bool {
    // SAFETY: setpriority has no memory-safety preconditions.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0 }
}

/// Cores online in the machine (not in our affinity mask, which pinning narrows to one).
pub fn online_cores() -> usize {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// Pins the calling thread (and the threads it starts later) to `core`; false if that failed.
pub fn pin_current_thread(core: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within CPU_SETSIZE for core < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// CPU time (user + system) this process has used so far.
pub fn own_cpu_time() -> Duration {
    process_cpu_time("/proc/self/stat").unwrap_or_default()
}

/// Busy and total jiffies of each core so far, from `/proc/stat` (busy counts user, system,
/// interrupt and softirq time: on loopback much of the network stack runs as softirq, which no
/// process's CPU time includes).
pub fn core_jiffies() -> Vec<(u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = fields.iter().take(8).sum();
            // idle and iowait are the 4th and 5th fields.
            let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// Percent busy of each core between two [`core_jiffies`] readings.
pub fn core_busy_percent(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(&(busy0, total0), &(busy1, total1))| {
            let total = total1.saturating_sub(total0).max(1);
            100.0 * busy1.saturating_sub(busy0) as f64 / total as f64
        })
        .collect()
}

/// Waits (up to `limit`) until every core was at least 95 % idle over one second; returns the
/// busy percentage of each core in the last second sampled, so a report can say how quiet the
/// machine was.
pub fn wait_until_quiet(limit: Duration) -> Vec<f64> {
    let deadline = Instant::now() + limit;
    loop {
        let before = core_jiffies();
        std::thread::sleep(Duration::from_secs(1));
        let busy = core_busy_percent(&before, &core_jiffies());
        if busy.iter().all(|&b| b <= 5.0) || Instant::now() >= deadline {
            return busy;
        }
    }
}

/// utime + stime from a `/proc/<pid>/stat` file.
pub fn process_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces; the fields we want follow its closing parenthesis.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100);
    Some(Duration::from_nanos(
        (utime + stime) * 1_000_000_000 / ticks,
    ))
}

/// The release `secchat` next to this example (`target/release/examples/loadgen` →
/// `target/release/secchat`), built first with the cargo that started us, if any.
pub fn find_server_binary(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?;
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = profile_dir
            .file_name()
            .is_some_and(|name| name == "release");
        let mut build = Command::new(cargo);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        build.args(["build", "--quiet", "--bin", "secchat", "--manifest-path"]);
        build.arg(manifest);
        if release {
            build.arg("--release");
        } else {
            eprintln!("loadgen: WARNING: not a release build; run with `cargo run --release`");
        }
        let status = build
            .status()
            .map_err(|e| format!("cargo build --bin secchat: {e}"))?;
        if !status.success() {
            return Err("cargo build --bin secchat failed".into());
        }
    }
    let binary = profile_dir.join("secchat");
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release` or pass --server PATH",
            binary.display()
        ))
    }
}
