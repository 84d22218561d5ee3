//! Building a [`Server`] from the configuration: the listeners, the signal handler, the router's
//! limits derived from the flags, and the settings every connection is driven with.

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Interest, Poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::slot::FlushList;
use super::{
    BUS_COMMANDS, BUS_SUBSCRIBER, FIRST_CONNECTION, HALF_OPEN_PER_ADDRESS, LISTENER, METRICS,
    OsEntropy, SIGNALS, Server, duration_ms, host_rule,
};
use crate::address::BlockCounts;
use crate::assets::Assets;
use crate::bus::{ClusterBus, ClusterUrl, MailboxRules, RedisLink, Role};
use crate::config::Config;
use crate::connection::{self, Settings};
use crate::memory::Trimmer;
use crate::metrics::LoopCounters;
use crate::outbox::BacklogTotal;
use crate::router::fasthash::FastMap;
use crate::router::{Router, RouterConfig};
use crate::socket_options;
use crate::tls::TlsAcceptor;

impl Server {
    /// Binds the listening socket and prepares the loop; nothing is served until [`Server::run`].
    /// With `tls`, the port speaks HTTPS and WSS only.
    pub fn bind(config: &Config, assets: Assets, tls: Option<TlsAcceptor>) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = if config.reuse_port {
            socket_options::bind_shared(config.listen)?
        } else {
            TcpListener::bind(config.listen)?
        };
        socket_options::deepen_backlog(&listener);
        let nodelay_inherited = socket_options::set_nodelay_for_accepted(&listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let mut listener = TcpListener::bind(addr)?;
                poll.registry()
                    .register(&mut listener, METRICS, Interest::READABLE)?;
                Some(listener)
            }
            None => None,
        };
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;

        let defaults = RouterConfig::defaults();
        let router_config = RouterConfig {
            max_sessions: config.max_connections,
            resume_grace_ms: duration_ms(config.resume_grace),
            rate_messages_per_sec: config.rate_messages,
            rate_friend_requests_per_min: config.rate_friend_requests,
            max_message_bytes: config.max_message_bytes,
            // The same per-address bound for sessions as for sockets: sessions outlive sockets.
            max_sessions_per_peer: config.max_connections_per_ip,
            // Over time, one address may start twice as many sessions per minute as it may
            // hold, and send twice one session's friend requests; `--max-connections-per-ip 0`
            // turns every per-address limit off.
            rate_sessions_per_address_per_min: config.max_connections_per_ip.saturating_mul(2),
            rate_friend_requests_per_address_per_min: if config.max_connections_per_ip == 0 {
                0
            } else {
                config.rate_friend_requests.saturating_mul(2)
            },
            // What one recipient may be sent from one address: its share of the recipient's
            // pending list and minute is off with the other per-address limits (the
            // recipient's totals stay).
            max_pending_incoming_per_address: if config.max_connections_per_ip == 0 {
                defaults.max_pending_incoming
            } else {
                defaults.max_pending_incoming_per_address
            },
            rate_incoming_requests_per_address_per_min: if config.max_connections_per_ip == 0 {
                0
            } else {
                defaults.rate_incoming_requests_per_address_per_min
            },
            max_handles: config.max_handles,
            mailbox_bytes: config.mailbox_bytes,
            mailbox_ttl_ms: duration_ms(config.mailbox_ttl),
            cluster: config.cluster.is_some(),
            ..defaults
        };
        let mut router_config = router_config;
        let bus = match &config.cluster {
            Some(url) => {
                let mailbox = MailboxRules {
                    letters_per_handle: router_config.mailbox_letters_per_handle,
                    bytes_per_handle: router_config.mailbox_bytes_per_handle,
                    bytes: router_config.mailbox_bytes,
                    ttl: config.mailbox_ttl,
                };
                let bus = cluster_bus(url, config.cluster_ca.as_deref(), mailbox)?
                    .with_resume_window(config.resume_grace);
                router_config.node_name = bus.name().to_owned();
                Some(bus)
            }
            None => None,
        };
        let ws_config = connection::ws_config(config.max_message_bytes);
        let outbox_ceiling = connection::outbox_ceiling(
            config.max_message_bytes,
            router_config.max_unsent_bytes,
            router_config.max_queue_bytes,
        );
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let settings = Settings {
            assets: Box::leak(Box::new(assets)),
            allow_origins: Box::leak(config.allow_origins.clone().into_boxed_slice()),
            hosts: host_rule(
                &config.public_hosts,
                config.listen,
                tls.as_ref(),
                crate::tls::machine_host_names,
            ),
            trusted_proxies: config.trusted_proxies.clone(),
            ws_config,
            outbox_ceiling,
            tls: tls.is_some(),
            backlog_total: BacklogTotal::default(),
            ping_interval: nonzero(config.ping_interval),
            idle_timeout: nonzero(config.idle_timeout),
        };
        let sweep_every = [
            Some(Duration::from_secs(1)),
            settings.ping_interval.map(|d| d / 4),
            settings.idle_timeout.map(|d| d / 4),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(20));
        let started = Instant::now();
        Ok(Server {
            poll,
            listener,
            metrics_listener,
            counters: LoopCounters::default(),
            tls,
            signals,
            slots: FastMap::default(),
            router: Router::new(router_config, OsEntropy::new()),
            settings,
            flush_list: FlushList::default(),
            doomed: Vec::new(),
            read_again: Vec::new(),
            next_token: FIRST_CONNECTION,
            started,
            sweep_every,
            next_sweep: started + sweep_every,
            accept_paused_until: None,
            // Room for every session plus HTTP requests and connections not yet CONNECTed.
            max_open_sockets: config.max_connections.saturating_mul(2).saturating_add(64),
            sockets: BlockCounts::new(config.max_connections_per_ip),
            heads: BlockCounts::new(if config.max_connections_per_ip == 0 {
                0
            } else {
                HALF_OPEN_PER_ADDRESS
            }),
            public_hosts: config.public_hosts.clone(),
            listen: config.listen,
            nodelay_inherited,
            shutdown_deadline: None,
            trimmer: Trimmer::new(Instant::now()),
            bus,
        })
    }
}

/// The node's links to the cluster's Redis, under a name drawn at random: a restarted node is a
/// new node, and the directory entries of the old one expire.
fn cluster_bus(
    url: &ClusterUrl,
    ca: Option<&std::path::Path>,
    mailbox: MailboxRules,
) -> io::Result<ClusterBus> {
    let name = format!("{:016x}", getrandom::u64().map_err(io::Error::other)?);
    let tls = if url.tls() {
        Some(crate::bus::tls_client_config(ca).map_err(io::Error::other)?)
    } else {
        None
    };
    let link = |role, token| {
        let link = RedisLink::new(url.clone(), role, token);
        match &tls {
            Some(config) => link.with_tls_config(config.clone()),
            None => link,
        }
    };
    let commands = link(Role::Commands, BUS_COMMANDS);
    let subscriber = link(
        Role::Subscriber {
            channels: vec![ClusterBus::channel(&name)],
        },
        BUS_SUBSCRIBER,
    );
    log::info!("cluster: this node is {name}, on {url}");
    Ok(ClusterBus::new(&name, commands, subscriber, mailbox))
}
