//! Signals: SIGHUP re-reads the TLS certificate, SIGINT and SIGTERM shut the server down
//! gracefully (every WebSocket closes with 1001, the loop stops once they are gone or
//! `SHUTDOWN_GRACE` has passed).

use mio::Token;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::{Clock, SHUTDOWN_GRACE, Server, host_rule};

impl Server {
    pub(super) fn on_signals(&mut self, clock: Clock) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
            match signal {
                SIGINT | SIGTERM => self.begin_shutdown(clock),
                SIGHUP => self.reload_certificate(),
                _ => {}
            }
        }
    }

    /// Re-reads the certificate and key (after a renewal). New connections get the new ones;
    /// open connections keep theirs; on error the old ones stay in use.
    fn reload_certificate(&mut self) {
        let Some(acceptor) = &mut self.tls else {
            log::info!("SIGHUP: nothing to reload without TLS");
            return;
        };
        match acceptor.reload() {
            Ok(()) => {
                log::info!(
                    "SIGHUP: reloaded {} (SHA-256 {})",
                    acceptor.cert_path().display(),
                    acceptor.fingerprint()
                );
                self.settings.hosts = host_rule(
                    &self.public_hosts,
                    self.listen,
                    Some(acceptor),
                    crate::tls::machine_host_names,
                );
            }
            Err(error) => log::error!("SIGHUP: keeping the current certificate: {error}"),
        }
    }

    fn begin_shutdown(&mut self, clock: Clock) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        log::info!("shutting down: closing {} connections", self.slots.len());
        self.shutdown_deadline = Some(clock.instant + SHUTDOWN_GRACE);
        let _ = self.poll.registry().deregister(&mut self.listener);
        if let Some(listener) = &mut self.metrics_listener {
            let _ = self.poll.registry().deregister(listener);
        }
        let tokens: Vec<Token> = self.slots.keys().copied().collect();
        for token in tokens {
            if let Some(slot) = self.slots.get_mut(&token) {
                let outcome = slot.conn.shut_down(clock.instant);
                self.carry_out(token, outcome, clock);
            }
        }
    }
}
