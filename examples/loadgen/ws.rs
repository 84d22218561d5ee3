//! The smallest WebSocket client the load generator needs (RFC 6455): the upgrade request, masked
//! client frames, and unmasked server frames. Written by hand so the client costs little more
//! than a `memcpy` and an XOR per message and never becomes the bottleneck.

/// The handshake key from RFC 6455 §1.3 and the accept value a correct server derives from it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// The HTTP request that opens `/ws` on `host`.
pub fn upgrade_request(host: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// What the start of the input says about the server's answer to the upgrade.
pub enum Upgrade {
    /// The head is not complete yet.
    Partial,
    /// `101` with the right accept value; the WebSocket starts after this many bytes.
    Accepted(usize),
    Refused(String),
}

pub fn parse_upgrade_response(input: &[u8]) -> Upgrade {
    let Some(end) = find(input, b"\r\n\r\n") else {
        return if input.len() > 16 * 1024 {
            Upgrade::Refused("response head over 16 KiB".into())
        } else {
            Upgrade::Partial
        };
    };
    let head = String::from_utf8_lossy(&input[..end]);
    let status_ok = head.starts_with("HTTP/1.1 101");
    let accept_ok = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == ACCEPT
        })
    });
    if status_ok && accept_ok {
        Upgrade::Accepted(end + 4)
    } else {
        let first = head.lines().next().unwrap_or("").to_owned();
        Upgrade::Refused(format!("upgrade refused: {first}"))
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Appends the header of a masked client frame carrying `len` payload bytes.
fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: [u8; 4]) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

/// XORs `data` with the repeating 4-byte `mask`, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask phase is back at 0.
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// Appends one masked frame whose payload `write` appends (it must append exactly `len` bytes).
pub fn push_frame_with(
    out: &mut Vec<u8>,
    opcode: u8,
    len: usize,
    mask: [u8; 4],
    write: impl FnOnce(&mut Vec<u8>),
) {
    push_header(out, opcode, len, mask);
    let start = out.len();
    write(out);
    debug_assert_eq!(out.len() - start, len, "frame length announced up front");
    apply_mask(&mut out[start..], mask);
}

pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    push_frame_with(out, opcode, payload.len(), mask, |out| {
        out.extend_from_slice(payload)
    });
}

/// One complete server frame at the start of the input.
pub struct ServerFrame<'a> {
    pub fin: bool,
    pub opcode: u8,
    pub payload: &'a [u8],
    /// Header plus payload.
    pub len: usize,
}

pub enum Parsed<'a> {
    Frame(ServerFrame<'a>),
    /// More input is needed.
    Partial,
    /// The server sent something a server must not (a masked frame, RSV bits).
    Invalid(&'static str),
}

pub fn parse_server_frame(input: &[u8]) -> Parsed<'_> {
    let (Some(&first), Some(&second)) = (input.first(), input.get(1)) else {
        return Parsed::Partial;
    };
    if first & 0x70 != 0 {
        return Parsed::Invalid("RSV bits set");
    }
    if second & 0x80 != 0 {
        return Parsed::Invalid("a masked server frame");
    }
    let (payload_len, header_len) = match second & 0x7F {
        126 => match input.get(2..4) {
            Some(bytes) => (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
            None => return Parsed::Partial,
        },
        127 => match input.get(2..10) {
            Some(bytes) => {
                let mut len = [0u8; 8];
                len.copy_from_slice(bytes);
                (u64::from_be_bytes(len) as usize, 10)
            }
            None => return Parsed::Partial,
        },
        short => (usize::from(short), 2),
    };
    let total = header_len + payload_len;
    match input.get(header_len..total) {
        Some(payload) => Parsed::Frame(ServerFrame {
            fin: first & 0x80 != 0,
            opcode: first & 0x0F,
            payload,
            len: total,
        }),
        None => Parsed::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_twice_restores_every_length() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, [1, 2, 3, 4]);
            if len > 0 {
                assert_ne!(data, original);
            }
            for (i, (masked, plain)) in data.iter().zip(&original).enumerate() {
                assert_eq!(*masked, plain ^ [1u8, 2, 3, 4][i % 4]);
            }
            apply_mask(&mut data, [1, 2, 3, 4]);
            assert_eq!(data, original);
        }
    }
}
