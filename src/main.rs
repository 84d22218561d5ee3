//! `secchat`: parse the configuration, start logging, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use secchat::assets::Assets;
use secchat::config::{Config, ConfigError};
use secchat::server::Server;

fn main() -> ExitCode {
    let config = match Config::from_args_and_env(std::env::args().skip(1), std::env::vars()) {
        Ok(config) => config,
        Err(ConfigError::Invalid(message)) => {
            eprintln!("secchat: {message}");
            return ExitCode::from(2);
        }
        Err(other) => {
            println!("{other}");
            return ExitCode::SUCCESS;
        }
    };
    // tungstenite logs whole messages at trace level: never let it log below info.
    let library_level = config.log_level.min(log::LevelFilter::Info);
    if let Err(error) = simple_logger::SimpleLogger::new()
        .with_level(config.log_level)
        .with_module_level("tungstenite", library_level)
        .with_utc_timestamps()
        .init()
    {
        eprintln!("secchat: cannot start logging: {error}");
        return ExitCode::FAILURE;
    }
    if config.tls_cert.is_some() {
        eprintln!(
            "secchat: --tls-cert/--tls-key: TLS is not built in yet; put a TLS proxy in front"
        );
        return ExitCode::from(2);
    }
    let assets = match &config.public_dir {
        Some(dir) => match Assets::from_dir(dir) {
            Ok(assets) => assets,
            Err(error) => {
                eprintln!("secchat: --public {}: {error}", dir.display());
                return ExitCode::from(2);
            }
        },
        None => Assets::embedded(),
    };
    raise_open_file_limit();
    let mut server = match Server::bind(&config, assets) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("secchat: cannot listen on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr().unwrap_or(config.listen);
    announce(addr);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("the event loop failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the URL to open and warns when browsers elsewhere could not use it.
fn announce(addr: std::net::SocketAddr) {
    let shown = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    println!("SecChat is running: open http://{shown}/");
    if !addr.ip().is_loopback() {
        log::warn!(
            "listening on {addr} without TLS: browsers on other machines will refuse to encrypt \
             (Web Crypto needs https:// or localhost); use --tls-cert/--tls-key or a TLS proxy"
        );
    }
}

/// Each connection is a file descriptor: lift the soft limit to the hard one so the default
/// `ulimit -n` of 1024 does not cap the server far below `--max-connections`.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::warn!("could not raise the open-file limit; see `ulimit -n`");
            }
        }
    }
}
