//! MESSAGE payloads with a sequence number, and the fast checks that each one arrived intact.
//!
//! A payload is the JSON text of an armored block, exactly `size` bytes between the quotes:
//!
//! ```text
//! -----BEGIN PGP MESSAGE-----\n0000000042\n<filler>\n-----END PGP MESSAGE-----
//! ```
//!
//! (`\n` is the two-byte JSON escape.) The 10 digits after the armor header line are the
//! sender's sequence number; the filler is base64 text whose starting offset depends on the
//! sequence number, so a payload swapped with another one, cut, or altered fails the check.

const HEADER: &[u8] = b"-----BEGIN PGP MESSAGE-----\\n";
const FOOTER: &[u8] = b"\\n-----END PGP MESSAGE-----";
const SEQ_DIGITS: usize = 10;
const SEQ_END: &[u8] = b"\\n";
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// The smallest payload that holds the header, the sequence number and the footer.
pub const MIN_SIZE: usize = HEADER.len() + SEQ_DIGITS + SEQ_END.len() + 1 + FOOTER.len();

/// What goes around the payload in a client MESSAGE.
const MESSAGE_HEAD: &[u8] = br#"{"type":"MESSAGE","to":""#;
const MESSAGE_PAYLOAD: &[u8] = br#"","payload":""#;
const MESSAGE_REF: &[u8] = br#"","ref":""#;
const MESSAGE_END: &[u8] = br#""}"#;

/// The start of a forwarded MESSAGE as the server writes it (`protocol::ServerFrame::Message`).
const FORWARD_HEAD: &[u8] = br#"{"type":"MESSAGE","from":""#;
const FORWARD_PAYLOAD: &[u8] = br#"","payload":""#;
const ACK_HEAD: &[u8] = br#"{"type":"ACK","ref":""#;

pub struct Payloads {
    size: usize,
    filler_len: usize,
    /// The alphabet repeated: the filler of sequence number `n` is
    /// `pattern[n % 64..][..filler_len]`.
    pattern: Vec<u8>,
}

/// Why a received MESSAGE failed its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Corrupt,
}

impl Payloads {
    pub fn new(size: usize) -> Payloads {
        let size = size.max(MIN_SIZE);
        let filler_len = size - (HEADER.len() + SEQ_DIGITS + SEQ_END.len() + FOOTER.len());
        let pattern = ALPHABET
            .iter()
            .copied()
            .cycle()
            .take(filler_len + ALPHABET.len())
            .collect();
        Payloads {
            size,
            filler_len,
            pattern,
        }
    }

    fn filler(&self, seq: u64) -> &[u8] {
        let start = (seq % ALPHABET.len() as u64) as usize;
        &self.pattern[start..start + self.filler_len]
    }

    /// The length of a client MESSAGE frame's JSON text.
    pub fn message_len(&self, with_ref: bool) -> usize {
        let reference = if with_ref {
            MESSAGE_REF.len() + SEQ_DIGITS
        } else {
            0
        };
        MESSAGE_HEAD.len() + 6 + MESSAGE_PAYLOAD.len() + self.size + reference + MESSAGE_END.len()
    }

    /// Appends the JSON text of a client MESSAGE (exactly [`Payloads::message_len`] bytes).
    pub fn push_message(&self, out: &mut Vec<u8>, to: &[u8; 6], seq: u64, with_ref: bool) {
        let digits = seq_digits(seq);
        out.extend_from_slice(MESSAGE_HEAD);
        out.extend_from_slice(to);
        out.extend_from_slice(MESSAGE_PAYLOAD);
        out.extend_from_slice(HEADER);
        out.extend_from_slice(&digits);
        out.extend_from_slice(SEQ_END);
        out.extend_from_slice(self.filler(seq));
        out.extend_from_slice(FOOTER);
        if with_ref {
            out.extend_from_slice(MESSAGE_REF);
            out.extend_from_slice(&digits);
        }
        out.extend_from_slice(MESSAGE_END);
    }

    /// Checks a payload's JSON text (between the quotes) and returns its sequence number.
    pub fn check(&self, payload: &[u8]) -> Result<u64, Fault> {
        if payload.len() != self.size {
            return Err(Fault::Corrupt);
        }
        let (header, rest) = payload.split_at(HEADER.len());
        let (digits, rest) = rest.split_at(SEQ_DIGITS);
        let (seq_end, rest) = rest.split_at(SEQ_END.len());
        let (filler, footer) = rest.split_at(self.filler_len);
        let seq = parse_digits(digits).ok_or(Fault::Corrupt)?;
        let intact = header == HEADER
            && seq_end == SEQ_END
            && footer == FOOTER
            && filler == self.filler(seq);
        if intact { Ok(seq) } else { Err(Fault::Corrupt) }
    }
}

fn seq_digits(mut seq: u64) -> [u8; SEQ_DIGITS] {
    let mut digits = [b'0'; SEQ_DIGITS];
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (seq % 10) as u8;
        seq /= 10;
    }
    digits
}

fn parse_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// A server frame, classified cheaply when it has the layout our server writes.
pub enum Incoming<'a> {
    Message {
        from: &'a [u8],
        payload: &'a [u8],
    },
    /// An ACK whose `ref` is a message sequence number.
    MessageAck {
        seq: u64,
    },
    /// Anything else (setup frames, errors): parse it as JSON.
    Other,
}

pub fn classify(text: &[u8]) -> Incoming<'_> {
    if let Some(rest) = text.strip_prefix(FORWARD_HEAD)
        && let (Some(from), Some(rest)) = (rest.get(..6), rest.get(6..))
        && let Some(rest) = rest.strip_prefix(FORWARD_PAYLOAD)
        && let Some(end) = rest.iter().position(|&b| b == b'"')
    {
        return Incoming::Message {
            from,
            payload: &rest[..end],
        };
    }
    if let Some(rest) = text.strip_prefix(ACK_HEAD)
        && rest.get(SEQ_DIGITS..) == Some(br#""}"#.as_slice())
        && let Some(seq) = rest.get(..SEQ_DIGITS).and_then(parse_digits)
    {
        return Incoming::MessageAck { seq };
    }
    Incoming::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload_of(message: &[u8]) -> &[u8] {
        let text = std::str::from_utf8(message).expect("ASCII");
        let start = text.find(r#""payload":""#).expect("payload") + 11;
        let end = start + text[start..].find('"').expect("closing quote");
        &message[start..end]
    }

    #[test]
    fn a_message_round_trips_and_is_valid_json() {
        let payloads = Payloads::new(512);
        for seq in [1, 63, 64, 9_999_999_999] {
            let mut out = Vec::new();
            payloads.push_message(&mut out, b"K7Q2ZD", seq, true);
            assert_eq!(out.len(), payloads.message_len(true));
            let value: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
            assert_eq!(value["ref"].as_str().map(str::len), Some(10));
            let payload = payload_of(&out);
            assert_eq!(payload.len(), 512);
            assert_eq!(payloads.check(payload), Ok(seq));
        }
    }

    #[test]
    fn a_swapped_or_altered_payload_fails() {
        let payloads = Payloads::new(200);
        let mut out = Vec::new();
        payloads.push_message(&mut out, b"K7Q2ZD", 5, false);
        let mut payload = payload_of(&out).to_vec();
        // Another sequence number with this filler: the filler no longer matches.
        payload[HEADER.len() + SEQ_DIGITS - 1] = b'6';
        assert_eq!(payloads.check(&payload), Err(Fault::Corrupt));
        payload[HEADER.len() + SEQ_DIGITS - 1] = b'5';
        assert_eq!(payloads.check(&payload), Ok(5));
        let last = payload.len() - 1;
        payload[last] = b'x';
        assert_eq!(payloads.check(&payload), Err(Fault::Corrupt));
        assert_eq!(payloads.check(&payload[..100]), Err(Fault::Corrupt));
    }
}
