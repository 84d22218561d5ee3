//! Who a request comes from when a reverse proxy forwarded it: `--trusted-proxy` and
//! `X-Forwarded-For` (docs/SECURITY.md, "Addresses, proxies and Host").
//!
//! Only a peer inside a trusted block is believed. Each proxy appends the address it received the
//! request from to `X-Forwarded-For`, so the rightmost entries are written by our own proxies and
//! everything to the left of the first untrusted entry may have been written by the client:
//! [`TrustedProxies::client`] walks from the right and stops at the first address that is not a
//! trusted proxy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::address::ClientAddr;

/// An address block `address/length`. IPv4 blocks are kept in the IPv4-mapped IPv6 range
/// (`::ffff:0:0/96`), so one comparison serves both families and a block given as an
/// IPv4-mapped IPv6 block means the same IPv4 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The block's first address in the mapped space; bits past `len` are zero.
    bits: u128,
    /// Prefix length in the 128-bit space (an IPv4 `/n` is `96 + n`).
    len: u8,
}

/// Where IPv4 addresses live in the 128-bit space: `::ffff:0:0/96`.
const IPV4_MAPPED_PREFIX: u128 = 0xffff << 32;

impl Cidr {
    /// `ADDRESS` (one address: /32 or /128) or `ADDRESS/LENGTH`; an IPv6 address may be in
    /// brackets. Bits past the prefix are ignored, as routers do (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        let (address, len) = match text.split_once('/') {
            Some((address, len)) => (address, Some(len)),
            None => (text, None),
        };
        let address = address
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(address);
        let ip: IpAddr = address.parse().ok()?;
        let family_bits: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => family_bits,
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<u8>().ok().filter(|&n| n <= family_bits)?
            }
            Some(_) => return None,
        };
        let len = if ip.is_ipv4() { len + 96 } else { len };
        Some(Cidr {
            bits: mapped_bits(ip) & prefix_mask(len),
            len,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        mapped_bits(ip) & prefix_mask(self.len) == self.bits
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len >= 96 && self.bits & !u128::from(u32::MAX) == IPV4_MAPPED_PREFIX {
            let v4 = Ipv4Addr::from_bits(self.bits as u32);
            write!(f, "{v4}/{}", self.len - 96)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from_bits(self.bits), self.len)
        }
    }
}

/// `ip` in the 128-bit space: IPv6 as is, IPv4 IPv4-mapped.
fn mapped_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

fn prefix_mask(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// The peers whose `X-Forwarded-For` is believed (`--trusted-proxy`, repeatable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
}

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies { blocks }
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn blocks(&self) -> &[Cidr] {
        &self.blocks
    }

    /// Whether connections from `ip` are a trusted proxy's.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// The client a request from `peer` is attributed to, given its `X-Forwarded-For` values
    /// joined in order with commas.
    ///
    /// From an untrusted peer, the header is ignored: the client is the peer. From a trusted one,
    /// the entries are walked right to left: the first address that is not itself a trusted
    /// proxy is the client. A malformed entry (not an IP address, optionally with a port;
    /// `unknown`; an empty one) ends the walk, as does the start of the list: the client is then
    /// the last address reached, i.e. the leftmost trusted hop walked over, or the peer itself
    /// when none was. So what a client wrote itself (to the left of what our proxies appended)
    /// is never believed, and a proxy that forwards nothing usable has its requests counted
    /// against its own address rather than against nobody.
    ///
    /// The walk is bounded by the request head (16 KiB, `http::MAX_HEAD_BYTES`).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> ClientAddr {
        let mut client = ClientAddr::new(peer);
        if !self.contains(client.ip()) {
            return client;
        }
        let Some(forwarded_for) = forwarded_for else {
            return client;
        };
        for hop in forwarded_for.rsplit(',') {
            let Some(ip) = parse_hop(hop.trim()) else {
                break;
            };
            client = ClientAddr::new(ip);
            if !self.contains(client.ip()) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `2001:db8::1`, or either with a port as some proxies
/// write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`, `[2001:db8::1]`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(bracketed) = hop.strip_prefix('[') {
        let (literal, after) = bracketed.split_once(']')?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        return literal.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (v4, port) = hop.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(digits: &str) -> bool {
    (1..=5).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the header holds, the client is the peer or one of its entries, and an
        /// untrusted valid last entry (what a proxy appends) is always the one believed.
        #[test]
        fn the_client_is_the_peer_or_an_entry_never_an_invented_address(
            hops in proptest::collection::vec(
                "(127\\.0\\.0\\.1|10\\.[0-9]\\.0\\.1|192\\.0\\.2\\.[0-9]{1,3}|::1|\
                 2001:db8::[0-9a-f]{1,4}|\\[::1\\]:[0-9]{1,6}|unknown|[ -~]{0,8})",
                0..6,
            ),
        ) {
            let proxies = trusted(&["127.0.0.1", "10.0.0.0/8", "::1"]);
            let header = hops.join(",");
            let peer = ip("127.0.0.1");
            let client = proxies.client(peer, Some(&header));
            let entries: Vec<ClientAddr> = header
                .split(',')
                .filter_map(|hop| parse_hop(hop.trim()))
                .map(ClientAddr::new)
                .collect();
            prop_assert!(
                client == ClientAddr::new(peer) || entries.contains(&client),
                "{header:?} gave {client:?}"
            );
            if let Some(last) = header.rsplit(',').next().and_then(|hop| parse_hop(hop.trim()))
                && !proxies.contains(last)
            {
                prop_assert_eq!(client, ClientAddr::new(last));
            }
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|c| Cidr::parse(c).unwrap()).collect())
    }

    #[test]
    fn blocks_parse_and_contain() {
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(one.contains(ip("::ffff:127.0.0.1")), "IPv4-mapped is IPv4");
        assert!(!one.contains(ip("127.0.0.2")));
        assert_eq!(one.to_string(), "127.0.0.1/32");

        let net = Cidr::parse("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.255.0.1")) && !net.contains(ip("11.0.0.1")));

        let v6 = Cidr::parse("[2001:db8::]/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            Cidr::parse("::ffff:192.0.2.0/120").unwrap(),
            Cidr::parse("192.0.2.0/24").unwrap()
        );
        let everything = Cidr::parse("::/0").unwrap();
        assert!(everything.contains(ip("192.0.2.1")) && everything.contains(ip("2001:db8::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));

        for bad in [
            "",
            "localhost",
            "127.0.0.1/33",
            "::1/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0 /8x",
            "fe80::1%eth0",
            "[::1",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_its_own_client_whatever_it_forwards() {
        let proxies = trusted(&["127.0.0.1"]);
        let client = proxies.client(ip("192.0.2.9"), Some("198.51.100.1"));
        assert_eq!(client, ClientAddr::new(ip("192.0.2.9")));
        let nobody = TrustedProxies::default();
        assert_eq!(
            nobody.client(ip("127.0.0.1"), Some("198.51.100.1")),
            ClientAddr::new(ip("127.0.0.1"))
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxies = trusted(&["127.0.0.1", "::1", "10.0.0.0/8"]);
        let from_proxy = |header: Option<&str>| proxies.client(ip("127.0.0.1"), header);
        let addr = |text: &str| ClientAddr::new(ip(text));
        // nginx's $proxy_add_x_forwarded_for: what the client sent, then its address.
        assert_eq!(
            from_proxy(Some("203.0.113.7, 198.51.100.1")),
            addr("198.51.100.1")
        );
        // A second proxy of ours in between.
        assert_eq!(
            from_proxy(Some("203.0.113.7, 198.51.100.1, 10.0.0.5")),
            addr("198.51.100.1")
        );
        // Several headers, joined in order.
        assert_eq!(
            from_proxy(Some("1.2.3.4,198.51.100.2,10.9.9.9")),
            addr("198.51.100.2")
        );
        assert_eq!(from_proxy(Some("2001:db8::7")), addr("2001:db8::7"));
        assert_eq!(from_proxy(Some("[2001:db8::7]:443")), addr("2001:db8::7"));
        assert_eq!(from_proxy(Some("198.51.100.3:5555")), addr("198.51.100.3"));
        assert_eq!(
            from_proxy(Some("::ffff:198.51.100.4")),
            addr("198.51.100.4")
        );
        // No header, or an empty one: the proxy's own address.
        assert_eq!(from_proxy(None), addr("127.0.0.1"));
        assert_eq!(from_proxy(Some("")), addr("127.0.0.1"));
        // Only trusted hops: the leftmost of them.
        assert_eq!(from_proxy(Some("10.0.0.1, 10.0.0.2")), addr("10.0.0.1"));
        // Malformed entries stop the walk at the last address reached.
        assert_eq!(from_proxy(Some("198.51.100.1, unknown")), addr("127.0.0.1"));
        assert_eq!(
            from_proxy(Some("198.51.100.1, bogus, 10.0.0.3")),
            addr("10.0.0.3")
        );
        assert_eq!(from_proxy(Some("198.51.100.1,")), addr("127.0.0.1"));
        assert_eq!(
            from_proxy(Some("garbage, 198.51.100.5")),
            addr("198.51.100.5")
        );
        for bad in [
            "198.51.100.1:99999",
            "198.51.100.1:",
            "[2001:db8::1]x",
            "[2001:db8::1",
            "fe80::1%eth0",
            "\u{fffd}",
        ] {
            assert_eq!(from_proxy(Some(bad)), addr("127.0.0.1"), "{bad:?}");
        }
    }
}
