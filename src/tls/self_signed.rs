//! `--tls-self-signed DIR`: a certificate for this machine's names and addresses, made on the
//! first start and reused afterwards, so the fingerprint users checked stays the same.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use time::{Date, OffsetDateTime};

use super::certificates::{fingerprint, read_certificates};

/// The certificate `--tls-self-signed` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the certificate, colon-separated upper-case hex.
    pub fingerprint: String,
    /// Whether this start made the certificate (false: an earlier one is reused).
    pub created: bool,
    /// The names and addresses a new certificate was made for (empty when reused).
    pub names: Vec<String>,
}

/// Valid for about ten years: a LAN server's users check the fingerprint once, so renewing it
/// would only make them check again.
const SELF_SIGNED_YEARS: i32 = 10;

/// Makes `DIR/cert.pem` and `DIR/key.pem` (DIR 0700, key 0600) for this machine's names and
/// addresses on the first start; later starts reuse them, so the fingerprint users checked
/// stays the same.
pub fn self_signed(dir: &Path) -> Result<SelfSigned, String> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let names = match (cert.exists(), key.exists()) {
        (true, true) => Vec::new(),
        (false, false) => create_self_signed(dir, &cert, &key)?,
        (has_cert, _) => {
            let (present, missing) = if has_cert {
                (&cert, &key)
            } else {
                (&key, &cert)
            };
            return Err(format!(
                "{} exists but {} does not: remove it to make a new certificate",
                present.display(),
                missing.display()
            ));
        }
    };
    let chain = read_certificates(&cert)?;
    let fingerprint = chain
        .first()
        .map(|der| fingerprint(der.as_ref()))
        .unwrap_or_default();
    Ok(SelfSigned {
        cert,
        key,
        fingerprint,
        created: !names.is_empty(),
        names,
    })
}

fn create_self_signed(dir: &Path, cert: &Path, key: &Path) -> Result<Vec<String>, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let names = machine_names();
    let failed = |e: rcgen::Error| format!("cannot make a self-signed certificate: {e}");
    let mut params = rcgen::CertificateParams::new(names.clone()).map_err(failed)?;
    let mut subject = rcgen::DistinguishedName::new();
    let host = names.first().map_or("localhost", String::as_str);
    subject.push(rcgen::DnType::CommonName, format!("SecChat on {host}"));
    params.distinguished_name = subject;
    (params.not_before, params.not_after) = validity(OffsetDateTime::now_utc().date())
        .ok_or("cannot make a self-signed certificate: today's date is out of range")?;
    let key_pair = rcgen::KeyPair::generate().map_err(failed)?;
    let certificate = params.self_signed(&key_pair).map_err(failed)?;
    // The key first: a crash in between leaves a key without a certificate, which the next
    // start reports instead of silently serving a certificate without its key.
    write_file_atomically(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_file_atomically(cert, certificate.pem().as_bytes(), 0o644)?;
    Ok(names)
}

/// When a certificate made on `today` (UTC) is valid: from the midnight a day back, so that a
/// browser whose clock is a little behind still accepts it, to the same day
/// [`SELF_SIGNED_YEARS`] later (the 28th at most, a day every month has).
fn validity(today: Date) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let first = today.previous_day()?;
    let last = Date::from_calendar_date(
        first.year() + SELF_SIGNED_YEARS,
        first.month(),
        first.day().min(28),
    )
    .ok()?;
    Some((first.midnight().assume_utc(), last.midnight().assume_utc()))
}

fn write_file_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let temporary = path.with_extension("pem.tmp");
    let failed = |e: io::Error| format!("cannot write {}: {e}", path.display());
    // A leftover from a crash may have other permissions; the mode applies only on creation.
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&temporary, path).map_err(failed)
}

/// The names and addresses browsers may use to reach this machine: its host name (and
/// `NAME.local` for mDNS, as on a Raspberry Pi), `localhost`, the loopback addresses and every
/// interface address except link-local ones.
pub fn machine_names() -> Vec<String> {
    let mut names = machine_host_names();
    names.push("localhost".to_string());
    names.push(Ipv4Addr::LOCALHOST.to_string());
    names.push(Ipv6Addr::LOCALHOST.to_string());
    names.extend(interface_addresses().iter().map(IpAddr::to_string));
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

/// This machine's host name (from `/etc/hostname`, else `gethostname`) and, when it is one
/// label, its mDNS name `NAME.local` (as on a Raspberry Pi); empty when it has no valid name.
pub fn machine_host_names() -> Vec<String> {
    let Some(host) = host_name() else {
        return Vec::new();
    };
    let local = (!host.contains('.')).then(|| format!("{host}.local"));
    std::iter::once(host).chain(local).collect()
}

fn host_name() -> Option<String> {
    let from_file = fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| is_dns_name(name));
    from_file.or_else(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
        let status = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if status != 0 {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = std::str::from_utf8(buf.get(..end)?)
            .ok()?
            .to_ascii_lowercase();
        is_dns_name(&name).then_some(name)
    })
}

/// Letters, digits and inner hyphens in dot-separated labels of at most 63 characters.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The machine's interface addresses that other machines could use.
fn interface_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we only read and then free once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut entry = list;
        while let Some(ifaddr) = entry.as_ref() {
            if let Some(ip) = socket_address(ifaddr.ifa_addr) {
                found.push(ip);
            }
            entry = ifaddr.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.retain(is_reachable_address);
    found
}

/// The IP address in a `sockaddr` from getifaddrs, if it is IPv4 or IPv6.
///
/// # Safety
/// `addr` is null or points to a valid `sockaddr` whose real size matches its family.
unsafe fn socket_address(addr: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: the caller guarantees `addr` is null or valid for its family's struct.
    unsafe {
        let family = i32::from(addr.as_ref()?.sa_family);
        match family {
            libc::AF_INET => {
                let v4 = &*addr.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*addr.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// Not loopback (named separately), unspecified, multicast or link-local (a browser cannot put
/// an IPv6 zone in a URL, and 169.254/16 is not a place anyone serves from).
fn is_reachable_address(ip: &IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsAcceptor;
    use crate::tls::test_files::temp_dir;
    use time::Month;

    #[test]
    fn validity_starts_a_day_back_and_lasts_ten_years() {
        let date = |(year, month, day): (i32, u8, u8)| {
            Date::from_calendar_date(year, Month::try_from(month).unwrap(), day).unwrap()
        };
        // (today, first day, last day), each as (year, month, day).
        for (today, first, last) in [
            ((1970, 1, 1), (1969, 12, 31), (1979, 12, 28)),
            ((2000, 3, 1), (2000, 2, 29), (2010, 2, 28)),
            ((2026, 1, 1), (2025, 12, 31), (2035, 12, 28)),
            ((2026, 7, 16), (2026, 7, 15), (2036, 7, 15)),
        ] {
            let (not_before, not_after) = validity(date(today)).unwrap();
            assert_eq!(not_before, date(first).midnight().assume_utc(), "{today:?}");
            assert_eq!(not_after, date(last).midnight().assume_utc(), "{today:?}");
        }
    }

    #[test]
    fn dns_names_are_checked() {
        assert!(is_dns_name("raspberrypi"));
        assert!(is_dns_name("chat-1.example.org"));
        for bad in ["", "-pi", "pi-", "a..b", "pi_1", "π", &"a".repeat(64)] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn machine_names_include_loopback_and_no_link_local() {
        let names = machine_names();
        for expected in ["localhost", "127.0.0.1", "::1"] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("fe80") || n.starts_with("169.254."))
        );
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn self_signed_is_made_once_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let base = temp_dir("self-signed");
        let dir = base.path().join("tls");
        let first = self_signed(&dir).unwrap();
        assert!(first.created);
        assert!(first.names.iter().any(|n| n == "localhost"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&first.key), 0o600);
        TlsAcceptor::load(&first.cert, &first.key).unwrap();
        let second = self_signed(&dir).unwrap();
        assert!(!second.created);
        assert_eq!(second.fingerprint, first.fingerprint);
        fs::remove_file(&second.cert).unwrap();
        let error = self_signed(&dir).unwrap_err();
        assert!(
            error.contains("key.pem") && error.contains("cert.pem"),
            "{error}"
        );
    }
}
