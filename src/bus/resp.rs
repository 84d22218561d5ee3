//! RESP2 on the wire: commands out (arrays of bulk strings), replies in, framed by the
//! `redis-protocol` crate behind a bounded, iterative pre-scan.
//!
//! Why the pre-scan ([`Decoder`]): `redis-protocol`'s decoder recurses once per nesting level
//! and starts from the first byte on every call. Bytes from the network could nest arrays
//! millions deep (a stack overflow aborts the process, no unwinding) or trickle a 64 MiB reply
//! in so that each read re-parses all of it. The scan walks the frame's headers iteratively,
//! resumes where it stopped, and refuses nesting beyond [`MAX_DEPTH`], a reply beyond
//! [`MAX_REPLY_BYTES`] and a bulk string not followed by CRLF; only a complete, checked frame is
//! handed to `redis-protocol`, once.

use std::fmt;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};

/// The largest reply (all of one frame, nested elements included) the link accepts; a larger
/// one is a protocol error. The bus's own replies are small; the bound only keeps a broken or
/// hostile peer from making this process buffer without end.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// How deeply arrays may nest in a reply. Pub/sub pushes nest once, EXEC's replies twice.
pub const MAX_DEPTH: usize = 8;

/// The longest length line (`$123\r\n`, `*4\r\n`): a sign, 20 digits and CRLF fit.
const MAX_LENGTH_LINE: usize = 24;

/// One reply from Redis.
///
/// RESP2 has one null for bulk strings and arrays alike inside an array; a null nested in an
/// array arrives as `Bulk(None)`, a null array as the whole reply as `Array(None)`.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Sizes and kinds only: a reply may carry a chat payload, which must not reach a log line
/// through a stray `{:?}`.
impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(text) => write!(f, "Simple({} bytes)", text.len()),
            Reply::Error(text) => write!(f, "Error({} bytes)", text.len()),
            Reply::Integer(n) => write!(f, "Integer({n})"),
            Reply::Bulk(None) => f.write_str("Bulk(nil)"),
            Reply::Bulk(Some(bytes)) => write!(f, "Bulk({} bytes)", bytes.len()),
            Reply::Array(None) => f.write_str("Array(nil)"),
            Reply::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

impl Reply {
    fn from_frame(frame: OwnedFrame) -> Reply {
        match frame {
            OwnedFrame::SimpleString(bytes) => {
                Reply::Simple(String::from_utf8_lossy(&bytes).into_owned())
            }
            OwnedFrame::Error(text) => Reply::Error(text),
            OwnedFrame::Integer(n) => Reply::Integer(n),
            OwnedFrame::BulkString(bytes) => Reply::Bulk(Some(bytes)),
            OwnedFrame::Array(items) => {
                Reply::Array(Some(items.into_iter().map(Reply::from_frame).collect()))
            }
            OwnedFrame::Null => Reply::Bulk(None),
        }
    }

    /// The bytes of a simple or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(text) => Some(text.as_bytes()),
            Reply::Bulk(Some(bytes)) => Some(bytes),
            _ => None,
        }
    }
}

/// Bytes that are not RESP2 as this link accepts it. The text names the rule that was broken,
/// never the bytes themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The encoded length of a command: `*N\r\n` and `$len\r\narg\r\n` per argument.
pub fn command_len(args: &[&[u8]]) -> usize {
    let header = |n: usize| 3 + decimal_len(n);
    header(args.len())
        + args
            .iter()
            .map(|arg| header(arg.len()) + arg.len() + 2)
            .sum::<usize>()
}

fn decimal_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Appends one command, a RESP array of bulk strings, to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let items: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&items);
    let start = out.len();
    let len = frame.encode_len(false);
    out.resize(start + len, 0);
    // The slice is exactly `encode_len` long, the one case `encode_borrowed` cannot refuse;
    // were it to, the command is written by hand rather than lost.
    let encoded = out
        .get_mut(start..)
        .map(|tail| encode_borrowed(tail, &frame, false));
    if !matches!(encoded, Some(Ok(n)) if n == len) {
        out.truncate(start);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Splits a byte stream into replies. Feed it the bytes read so far (the same buffer, grown, on
/// every call, until a reply is taken): it remembers how far it checked.
///
/// Invariant: `pos` and `line_from` are offsets into the reply that starts at the front of the
/// buffer handed to [`Decoder::next`]; `open` holds, per array being scanned, how many of its
/// elements are still to come (all non-zero).
#[derive(Default)]
pub struct Decoder {
    /// Where the next header (type byte) starts.
    pos: usize,
    /// How far the search for the current header's `\n` has got.
    line_from: usize,
    open: Vec<u64>,
}

impl Decoder {
    /// The next complete reply at the front of `buf` and how many bytes it took, `Ok(None)`
    /// when more bytes are needed, or why `buf` is not a reply.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
        let Some(len) = self.scan(buf)? else {
            return Ok(None);
        };
        self.pos = 0;
        self.line_from = 0;
        self.open.clear();
        let frame = buf
            .get(..len)
            .ok_or(ProtocolError("scan past the buffer"))?;
        let is_array = frame.first() == Some(&b'*');
        match decode(frame) {
            Ok(Some((frame, used))) if used == len => Ok(Some((
                match frame {
                    OwnedFrame::Null if is_array => Reply::Array(None),
                    frame => Reply::from_frame(frame),
                },
                len,
            ))),
            // The scan and the decoder disagree: an integer that does not parse, an error
            // line that is not UTF-8.
            _ => Err(ProtocolError("malformed reply")),
        }
    }

    /// Walks headers from where the last call stopped; `Some(len)` once the reply at the front
    /// of `buf` is complete.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let is_length = matches!(kind, b'$' | b'*');
            let search_from = self.line_from.max(self.pos + 1);
            let newline = buf
                .get(search_from..)
                .and_then(|rest| memchr::memchr(b'\n', rest));
            let Some(newline) = newline else {
                self.line_from = buf.len().max(search_from);
                check_size(buf.len())?;
                if is_length && buf.len() - self.pos > MAX_LENGTH_LINE {
                    return Err(ProtocolError("a length line too long"));
                }
                return Ok(None);
            };
            let end = search_from + newline + 1;
            check_size(end)?;
            // `end >= pos + 2`: the type byte, then at least the `\n`.
            if end - 2 <= self.pos || buf.get(end - 2) != Some(&b'\r') {
                return Err(ProtocolError("a line does not end in CRLF"));
            }
            let line = buf.get(self.pos + 1..end - 2).unwrap_or_default();
            let complete_at = match kind {
                b'+' | b'-' | b':' => end,
                b'$' => match length(line)? {
                    None => end,
                    Some(n) => {
                        let body_end = end
                            .checked_add(n)
                            .filter(|&e| e + 2 <= MAX_REPLY_BYTES)
                            .ok_or(ProtocolError("a reply over the size bound"))?;
                        match buf.get(body_end..body_end + 2) {
                            None => {
                                // The short header is read again next time; the body is not
                                // searched for newlines.
                                self.line_from = self.pos;
                                return Ok(None);
                            }
                            Some(b"\r\n") => body_end + 2,
                            Some(_) => {
                                return Err(ProtocolError("a bulk string not followed by CRLF"));
                            }
                        }
                    }
                },
                b'*' => match length(line)? {
                    None | Some(0) => end,
                    Some(n) => {
                        if self.open.len() >= MAX_DEPTH {
                            return Err(ProtocolError("arrays nested too deeply"));
                        }
                        self.open.push(n as u64);
                        self.pos = end;
                        self.line_from = end;
                        continue;
                    }
                },
                _ => return Err(ProtocolError("an unknown reply type")),
            };
            self.pos = complete_at;
            self.line_from = complete_at;
            // One element is complete: count it against the arrays it completes in turn.
            loop {
                match self.open.last_mut() {
                    None => return Ok(Some(complete_at)),
                    Some(left) if *left > 1 => {
                        *left -= 1;
                        break;
                    }
                    Some(_) => {
                        self.open.pop();
                    }
                }
            }
        }
    }
}

fn check_size(upto: usize) -> Result<(), ProtocolError> {
    if upto > MAX_REPLY_BYTES {
        return Err(ProtocolError("a reply over the size bound"));
    }
    Ok(())
}

/// A `$` or `*` length: `-1` is null; otherwise plain decimal digits, at most the reply bound
/// (no array can have more elements than its reply has bytes).
fn length(line: &[u8]) -> Result<Option<usize>, ProtocolError> {
    if line == b"-1" {
        return Ok(None);
    }
    let bad = ProtocolError("a malformed length");
    if line.is_empty() || line.len() > 20 || !line.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let n = line.iter().try_fold(0usize, |n, &digit| {
        n.checked_mul(10)?.checked_add(usize::from(digit - b'0'))
    });
    match n {
        Some(n) if n <= MAX_REPLY_BYTES => Ok(Some(n)),
        _ => Err(ProtocolError("a reply over the size bound")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply in `input`, fed one byte more at a time as a slow socket would.
    fn decode_trickled(input: &[u8]) -> Result<Vec<Reply>, ProtocolError> {
        let mut decoder = Decoder::default();
        let mut replies = Vec::new();
        let mut start = 0;
        for end in 1..=input.len() {
            while let Some((reply, used)) = decoder.next(&input[start..end])? {
                replies.push(reply);
                start += used;
            }
        }
        assert_eq!(start, input.len(), "bytes left over");
        Ok(replies)
    }

    fn decode_all(input: &[u8]) -> Result<Vec<Reply>, ProtocolError> {
        let mut decoder = Decoder::default();
        let mut replies = Vec::new();
        let mut start = 0;
        while let Some((reply, used)) = decoder.next(&input[start..])? {
            replies.push(reply);
            start += used;
        }
        Ok(replies)
    }

    fn bulk(bytes: &[u8]) -> Reply {
        Reply::Bulk(Some(bytes.to_vec()))
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        let args: &[&[u8]] = &[b"SET", b"k", b"a\r\nb", b""];
        encode_command(&mut out, args);
        assert_eq!(
            out,
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n$0\r\n\r\n".to_vec()
        );
        assert_eq!(command_len(args), out.len());
        let long = vec![b'x'; 12345];
        assert_eq!(command_len(&[&long]), {
            let mut out = Vec::new();
            encode_command(&mut out, &[&long]);
            out.len()
        });
    }

    #[test]
    fn every_reply_type_decodes_whole_and_trickled() {
        let input = b"+OK\r\n-ERR wrong\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*0\r\n\
*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\n\n\n\n\r\n*2\r\n*1\r\n:1\r\n$-1\r\n$0\r\n\r\n";
        let expected = vec![
            Reply::Simple("OK".into()),
            Reply::Error("ERR wrong".into()),
            Reply::Integer(-42),
            bulk(b"he\r\no"),
            Reply::Bulk(None),
            Reply::Array(None),
            Reply::Array(Some(vec![])),
            Reply::Array(Some(vec![bulk(b"message"), bulk(b"ch"), bulk(b"\n\n\n")])),
            Reply::Array(Some(vec![
                Reply::Array(Some(vec![Reply::Integer(1)])),
                Reply::Bulk(None),
            ])),
            bulk(b""),
        ];
        assert_eq!(decode_all(input), Ok(expected.clone()));
        assert_eq!(decode_trickled(input), Ok(expected));
    }

    #[test]
    fn junk_is_an_error_never_a_panic() {
        let cases: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\n",
            b"+OK\n",
            b"\r\n",
            b"$3\r\nabcd\r\n",
            b"$x\r\n",
            b"$-2\r\n",
            b"$\r\n",
            b"*-5\r\n",
            b"$99999999999999999999999\r\n",
            b"$67108865\r\n",
            b":12x\r\n",
            b"*1\r\n!\r\n",
            b"$000000000000000000000000000000003\r\n",
        ];
        for case in cases {
            assert!(
                decode_all(case).is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let deep = b"*1\r\n".repeat(1_000_000);
        assert_eq!(
            decode_all(&deep),
            Err(ProtocolError("arrays nested too deeply"))
        );
        let mut ok = b"*1\r\n".repeat(MAX_DEPTH);
        ok.extend_from_slice(b":7\r\n");
        assert_eq!(decode_all(&ok).map(|r| r.len()), Ok(1));
    }

    #[test]
    fn size_is_bounded_before_the_bytes_arrive() {
        // The length alone is refused: nothing waits for 64 MiB to be buffered.
        let header = format!("${}\r\n", MAX_REPLY_BYTES);
        assert!(decode_all(header.as_bytes()).is_err());
        // A simple string that never ends stops at the bound.
        let mut decoder = Decoder::default();
        let mut endless = b"+".to_vec();
        endless.resize(MAX_REPLY_BYTES + 1, b'a');
        assert!(decoder.next(&endless).is_err());
        // A length line that never ends stops long before.
        assert!(decode_all(&[b"$".as_slice(), &[b'1'; 40]].concat()).is_err());
    }

    #[test]
    fn a_large_reply_trickled_in_is_scanned_once() {
        // 100 000 elements in 1 KiB steps: rescanning from the front each time would be
        // ~100 000 × 1 000 header parses; the resumed scan is linear.
        let mut input = b"*100000\r\n".to_vec();
        for i in 0..100_000 {
            input.extend_from_slice(format!(":{i}\r\n").as_bytes());
        }
        let mut decoder = Decoder::default();
        let mut got = None;
        for end in (1024..input.len()).step_by(1024).chain([input.len()]) {
            if let Some(reply) = decoder.next(&input[..end]).unwrap() {
                got = Some(reply);
            }
        }
        let (reply, used) = got.unwrap();
        assert_eq!(used, input.len());
        let Reply::Array(Some(items)) = reply else {
            panic!("not an array")
        };
        assert_eq!(items.len(), 100_000);
        assert_eq!(items[99_999], Reply::Integer(99_999));
    }

    #[test]
    fn debug_shows_no_payload() {
        let reply = Reply::Array(Some(vec![bulk(b"message"), bulk(b"secret payload")]));
        let shown = format!("{reply:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("14 bytes"), "{shown}");
    }
}
