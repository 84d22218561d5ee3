//! `secchat`: parse the configuration, start logging, serve until SIGINT/SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use secchat::assets::Assets;
use secchat::config::{Config, ConfigError};
use secchat::server::Server;
use secchat::tls::{self, SelfSigned, TlsAcceptor};

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
    let (acceptor, self_signed) = match tls_from_config(&config) {
        Ok(Some((acceptor, self_signed))) => (Some(acceptor), self_signed),
        Ok(None) => (None, None),
        Err(message) => {
            eprintln!("secchat: {message}");
            return ExitCode::from(2);
        }
    };
    let tls_on = acceptor.is_some();
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
    secchat::process_limits::raise_open_file_limit();
    secchat::memory::keep_freed_memory_for_reuse();
    let mut server = match Server::bind(&config, assets, acceptor) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("secchat: cannot listen on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr().unwrap_or(config.listen);
    announce(addr, tls_on, self_signed.as_ref());
    println!("/ws answers to Host: {}", server.accepted_hosts());
    warn_about_names(&config, server.accepts_any_host());
    if let Some(metrics) = config.metrics_listen {
        println!("Metrics: http://{metrics}/metrics");
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("the event loop failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The TLS set-up the flags ask for: `--tls-cert`/`--tls-key`, or `--tls-self-signed DIR` (then
/// also what the banner says about that certificate). Errors name the flag and the file.
fn tls_from_config(config: &Config) -> Result<Option<(TlsAcceptor, Option<SelfSigned>)>, String> {
    if let Some(dir) = &config.tls_self_signed {
        let made = tls::self_signed(dir)
            .map_err(|e| format!("--tls-self-signed {}: {e}", dir.display()))?;
        let acceptor = TlsAcceptor::load(&made.cert, &made.key)
            .map_err(|e| format!("--tls-self-signed {}: {e}", dir.display()))?;
        return Ok(Some((acceptor, Some(made))));
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => TlsAcceptor::load(cert, key)
            .map(|acceptor| Some((acceptor, None)))
            .map_err(|e| format!("--tls-cert/--tls-key: {e}")),
        _ => Ok(None),
    }
}

/// Prints the URL(s) to open, the self-signed certificate's fingerprint, and warns when browsers
/// elsewhere could not use the server.
fn announce(addr: SocketAddr, tls_on: bool, self_signed: Option<&SelfSigned>) {
    let scheme = if tls_on { "https" } else { "http" };
    let url = |host: &str| match (tls_on, addr.port()) {
        (true, 443) | (false, 80) => format!("{scheme}://{host}/"),
        (_, port) => format!("{scheme}://{host}:{port}/"),
    };
    let first = if addr.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        url_host(addr.ip())
    };
    println!("SecChat is running: open {}", url(&first));
    if tls_on && addr.ip().is_unspecified() {
        // Listening everywhere: the machine's names and addresses work from other machines.
        for name in tls::machine_names() {
            if name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
                continue;
            }
            let host = name
                .parse::<IpAddr>()
                .map_or_else(|_| name.clone(), url_host);
            println!("  or {}", url(&host));
        }
    }
    if let Some(certificate) = self_signed {
        let how = if certificate.created {
            format!("made now for {}", certificate.names.join(", "))
        } else {
            "made on an earlier start".to_string()
        };
        println!(
            "TLS certificate: self-signed, {} ({how})",
            certificate.cert.display()
        );
        println!("SHA-256 fingerprint: {}", certificate.fingerprint);
        println!(
            "Browsers will warn about this certificate: continue only if the SHA-256 \
             fingerprint they show is the one above."
        );
    }
    if !addr.ip().is_loopback() && !tls_on {
        log::warn!(
            "listening on {addr} without TLS: browsers on other machines will refuse to encrypt \
             (Web Crypto needs https:// or localhost); use --tls-cert/--tls-key or a TLS proxy"
        );
    }
}

/// Warns when the Host check on `/ws` (docs/SECURITY.md, "Addresses, proxies and Host") is
/// turned off, or when it will refuse the name a reverse proxy forwards.
fn warn_about_names(config: &Config, accepts_any_host: bool) {
    if config.reuse_port && config.cluster.is_none() {
        log::warn!(
            "--reuse-port without --cluster: processes sharing this port are separate servers, \
             and users connected to different ones cannot reach one another"
        );
    }
    if accepts_any_host {
        log::warn!(
            "--public-host '*': /ws accepts every Host name, so a web page elsewhere can reach \
             this server through DNS rebinding; list the names users open instead"
        );
    }
    if !config.trusted_proxies.is_empty() && config.public_hosts.is_empty() {
        log::warn!(
            "--trusted-proxy without --public-host: /ws answers 421 to every name but localhost, \
             IP addresses and the certificate's; set --public-host to the name the proxy serves"
        );
    }
}

/// An IP address as the host part of a URL (IPv6 in brackets).
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
