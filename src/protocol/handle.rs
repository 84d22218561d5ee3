//! Rendezvous handles (PROTOCOL.md §10): [`Handle`], and LISTEN's `handles` array
//! ([`HandleList`]), read in place without allocating.
//!
//! A handle is a secret two clients share; the server only compares it byte for byte. It is never
//! logged: `Debug` shows neither a handle nor a list's contents.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

use super::RawJson;
use super::json_string::{ascii_units, string_inner};

/// Characters in a handle: the unpadded base64url of 32 bytes.
pub const HANDLE_LEN: usize = 43;

/// The most handles one LISTEN or UNLISTEN may name.
pub const MAX_HANDLES_PER_REQUEST: usize = 1024;

/// The most handles one MESSAGE may go to (PROTOCOL.md §11): a group of up to 64 members, each
/// message copied to the others.
pub const MAX_FANOUT_HANDLES: usize = 64;

/// A rendezvous handle: exactly [`HANDLE_LEN`] characters of the base64url alphabet
/// (`A-Z a-z 0-9 - _`). Any 43 such characters are a handle; the two bits the last character
/// carries beyond 32 bytes are not checked, as the server never decodes the bytes.
///
/// Invariant: every byte is a base64url character, so the text is ASCII.
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
pub struct Handle([u8; HANDLE_LEN]);

/// Byte for byte, as six 8-byte words (the last overlapping the fifth) compared without a
/// branch or a call: the comparison of the handle maps' lookups on the MESSAGE path, where the
/// derived one calls `memcmp`.
impl PartialEq for Handle {
    #[inline]
    fn eq(&self, other: &Handle) -> bool {
        const LAST: usize = HANDLE_LEN - 8;
        // The offsets are constants within the array: never the fallback.
        let word = |text: &[u8; HANDLE_LEN], at: usize| {
            text.get(at..)
                .and_then(|rest| rest.first_chunk::<8>())
                .map_or(0, |word| u64::from_le_bytes(*word))
        };
        [0, 8, 16, 24, 32, LAST].into_iter().fold(0, |differ, at| {
            differ | (word(&self.0, at) ^ word(&other.0, at))
        }) == 0
    }
}

/// Exactly as its 43 bytes hash, as [`Borrow`] requires.
impl Hash for Handle {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A handle found by its text: it hashes and compares exactly as its 43 bytes do, so a map of
/// handles can be asked with the bytes of a frame before they are checked to be a handle
/// ([`HandleArg`]).
impl Borrow<[u8; HANDLE_LEN]> for Handle {
    #[inline]
    fn borrow(&self) -> &[u8; HANDLE_LEN] {
        &self.0
    }
}

/// Whether `byte` is a base64url character, in comparisons without branches or loads, so that
/// checking a handle's 43 bytes compiles to a few vector instructions on the MESSAGE path.
#[inline(always)]
fn is_base64url(byte: u8) -> bool {
    let upper = byte.wrapping_sub(b'A') < 26;
    let lower = byte.wrapping_sub(b'a') < 26;
    let digit = byte.wrapping_sub(b'0') < 10;
    upper | lower | digit | (byte == b'-') | (byte == b'_')
}

/// Whether every byte of `text` is a base64url character: three 16-byte blocks (the last
/// overlapping the second) read where they lie, each checked without an early exit, so that each
/// is a few vector instructions.
#[inline(always)]
fn all_base64url(text: &[u8; HANDLE_LEN]) -> bool {
    // The offsets are constants within the array: never the fallback.
    let block_ok = |at: usize| {
        text.get(at..)
            .and_then(|rest| rest.first_chunk::<16>())
            .is_some_and(|block| block.iter().fold(true, |all, &b| all & is_base64url(b)))
    };
    block_ok(0) & block_ok(16) & block_ok(HANDLE_LEN - 16)
}

impl Handle {
    /// The handle spelled by these characters (`Some(ascii)` each, `None` for a non-ASCII one),
    /// or `None` when they are not exactly 43 base64url characters.
    pub fn parse_units(units: impl IntoIterator<Item = Option<u8>>) -> Option<Handle> {
        let mut text = [0u8; HANDLE_LEN];
        let mut len = 0;
        for unit in units {
            let byte = unit.filter(|&byte| is_base64url(byte))?;
            *text.get_mut(len)? = byte;
            len += 1;
        }
        (len == HANDLE_LEN).then_some(Handle(text))
    }

    /// The handle a JSON string (raw, quotes included) names, escapes decoded; `None` when it is
    /// not a handle or `raw` is not a string.
    #[inline]
    pub fn from_json(raw: RawJson<'_>) -> Option<Handle> {
        if !raw.is_string() {
            return None;
        }
        let inner = string_inner(raw).as_bytes();
        // As clients write it: 43 plain characters, no escape to decode.
        if let Ok(text) = <&[u8; HANDLE_LEN]>::try_from(inner) {
            return all_base64url(text).then_some(Handle(*text));
        }
        if !inner.contains(&b'\\') {
            return None;
        }
        Handle::parse_units(ascii_units(raw))
    }

    /// The handle with this text, for tests, benches and fuzz targets.
    pub fn parse(text: &str) -> Option<Handle> {
        Handle::parse_units(text.bytes().map(|byte| byte.is_ascii().then_some(byte)))
    }

    /// The handle spelling the bits of `seed`, six to a character (base64url without padding,
    /// `A` past the seed's end): distinct seeds of up to 32 bytes give distinct handles. For
    /// tests, benches and fuzz targets that need many of them.
    pub fn from_seed(seed: &[u8]) -> Handle {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut text = [b'A'; HANDLE_LEN];
        let bits = seed
            .iter()
            .take(32)
            .flat_map(|byte| (0..8).rev().map(move |shift| (byte >> shift) & 1));
        let mut bits = bits.peekable();
        for slot in text.iter_mut() {
            if bits.peek().is_none() {
                break;
            }
            let sextet = bits.by_ref().take(6).fold(0u8, |acc, bit| (acc << 1) | bit);
            *slot = ALPHABET[usize::from(sextet)];
        }
        Handle(text)
    }

    /// The handle's characters, ASCII by the type's invariant.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; HANDLE_LEN] {
        &self.0
    }

    /// The handle's text, for frames.
    #[inline]
    pub fn as_str(&self) -> &str {
        // Always ASCII (the type's invariant), so never the fallback.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// A MESSAGE's `handle` string as decoded, before it is checked: the check waits until the
/// router has looked the text up, since a handle someone listens on needs none (only handles are
/// ever listened on). Borrowed from the frame's text, so nothing is copied on the way.
#[derive(Clone, Copy)]
pub enum HandleArg<'a> {
    /// Exactly 43 bytes without an escape: the handle's text if it is one.
    Plain(&'a [u8; HANDLE_LEN]),
    /// Any other JSON string (escapes decoded when checked).
    Other(RawJson<'a>),
}

impl<'a> HandleArg<'a> {
    /// The string of a MESSAGE's `handle` (raw, quotes included).
    #[inline]
    pub fn new(raw: RawJson<'a>) -> HandleArg<'a> {
        match <&[u8; HANDLE_LEN]>::try_from(string_inner(raw).as_bytes()) {
            Ok(text) if raw.is_string() => HandleArg::Plain(text),
            _ => HandleArg::Other(raw),
        }
    }

    /// The 43 bytes to look up, when the string is written without escapes.
    #[inline]
    pub fn text(self) -> Option<&'a [u8; HANDLE_LEN]> {
        match self {
            HandleArg::Plain(text) => Some(text),
            HandleArg::Other(_) => None,
        }
    }

    /// The handle, or `None` when the string is not one (`bad_handle`).
    #[inline]
    pub fn checked(self) -> Option<Handle> {
        match self {
            HandleArg::Plain(text) => all_base64url(text).then_some(Handle(*text)),
            HandleArg::Other(raw) => Handle::from_json(raw),
        }
    }
}

/// Never shows the handle: it is a secret of two clients.
impl fmt::Debug for HandleArg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandleArg(<redacted>)")
    }
}

/// Never shows the handle: it is a secret of two clients.
impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handle(<redacted>)")
    }
}

/// LISTEN's and UNLISTEN's `handles`: a JSON array of 1 to [`MAX_HANDLES_PER_REQUEST`] strings,
/// kept as its raw text. Each string is checked to be a handle only when the router walks the
/// list ([`HandleList::iter`]): `bad_handle` comes after the checks of the session's version.
#[derive(Clone, Copy)]
pub struct HandleList<'a>(RawJson<'a>);

impl<'a> HandleList<'a> {
    /// LISTEN's and UNLISTEN's list: `raw` when it is an array of 1 to
    /// [`MAX_HANDLES_PER_REQUEST`] strings, else `None` (`bad_request`).
    pub fn new(raw: RawJson<'a>) -> Option<HandleList<'a>> {
        HandleList::of_at_most(raw, MAX_HANDLES_PER_REQUEST)
    }

    /// MESSAGE's `handles`: an array of 1 to [`MAX_FANOUT_HANDLES`] strings, else `None`
    /// (`bad_request`).
    pub fn fanout(raw: RawJson<'a>) -> Option<HandleList<'a>> {
        HandleList::of_at_most(raw, MAX_FANOUT_HANDLES)
    }

    fn of_at_most(raw: RawJson<'a>, max: usize) -> Option<HandleList<'a>> {
        let mut count = 0;
        for element in ArrayElements::new(raw.get())? {
            if !element?.is_string() {
                return None;
            }
            count += 1;
            if count > max {
                return None;
            }
        }
        (count > 0).then_some(HandleList(raw))
    }

    /// Each string of the list as a handle, `None` for one that is not (`bad_handle`).
    pub fn iter(self) -> impl Iterator<Item = Option<Handle>> + 'a {
        ArrayElements::new(self.0.get())
            .into_iter()
            .flatten()
            .map(|element| element.and_then(Handle::from_json))
    }

    /// How many strings the list holds (never 0: an empty list is no list).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        self.iter().count()
    }
}

/// Two lists are equal when written alike (for tests that compare decoders).
impl PartialEq for HandleList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for HandleList<'_> {}

/// Shows the number of handles, never one of them.
impl fmt::Debug for HandleList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandleList(<{} handles>)", self.len())
    }
}

/// The elements of a JSON array's validated raw text, each as `Some(raw)` when it is a string and
/// `None` when it is any other value (then the walk stops: no element is read past it).
struct ArrayElements<'a> {
    text: &'a str,
    position: usize,
    done: bool,
}

impl<'a> ArrayElements<'a> {
    /// `None` when `text` is not an array.
    fn new(text: &'a str) -> Option<ArrayElements<'a>> {
        let bytes = text.as_bytes();
        if bytes.first() != Some(&b'[') {
            return None;
        }
        let mut elements = ArrayElements {
            text,
            position: 1,
            done: false,
        };
        elements.skip_space();
        if bytes.get(elements.position) == Some(&b']') {
            elements.done = true;
        }
        Some(elements)
    }

    fn skip_space(&mut self) {
        let bytes = self.text.as_bytes();
        while bytes
            .get(self.position)
            .is_some_and(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.position += 1;
        }
    }
}

impl<'a> Iterator for ArrayElements<'a> {
    type Item = Option<RawJson<'a>>;

    fn next(&mut self) -> Option<Option<RawJson<'a>>> {
        if self.done {
            return None;
        }
        self.skip_space();
        let bytes = self.text.as_bytes();
        let start = self.position;
        if bytes.get(start) != Some(&b'"') {
            self.done = true;
            return Some(None);
        }
        // The text is validated JSON: the first `"` not escaped ends the string, and an escape's
        // second byte is never a quote that ends it (`\uXXXX` holds hex digits only). Found with
        // a vector search: a LISTEN of 1,024 handles is 47 KB.
        let mut at = start + 1;
        loop {
            let found = bytes
                .get(at..)
                .and_then(|rest| memchr::memchr2(b'"', b'\\', rest));
            let Some(found) = found else {
                self.done = true;
                return Some(None);
            };
            at += found;
            if bytes.get(at) == Some(&b'"') {
                break;
            }
            at += 2;
        }
        let end = at + 1;
        self.position = end;
        self.skip_space();
        match bytes.get(self.position) {
            Some(b',') => self.position += 1,
            _ => self.done = true,
        }
        Some(self.text.get(start..end).map(RawJson::validated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn raw(text: &str) -> RawJson<'_> {
        RawJson::parse(text).unwrap_or_else(|| panic!("not JSON: {text}"))
    }

    #[test]
    fn handles_are_equal_exactly_when_every_byte_is() {
        let base = *b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
        assert_eq!(Handle(base), Handle(base));
        for position in 0..HANDLE_LEN {
            let mut other = base;
            other[position] = b'-';
            assert_ne!(Handle(base), Handle(other), "{position}");
            assert_eq!(Handle(base) == Handle(other), base == other);
        }
    }

    #[test]
    fn the_base64url_check_is_the_alphabet_exactly() {
        for byte in 0..=u8::MAX {
            let expected = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
            assert_eq!(is_base64url(byte), expected, "{byte}");
            let mut text = [b'A'; HANDLE_LEN];
            text[HANDLE_LEN - 1] = byte;
            assert_eq!(all_base64url(&text), expected, "{byte} last");
            text[0] = byte;
            text[HANDLE_LEN - 1] = b'A';
            assert_eq!(all_base64url(&text), expected, "{byte} first");
        }
    }

    #[test]
    fn a_handle_is_43_base64url_characters() {
        assert_eq!(A.len(), HANDLE_LEN);
        let handle = Handle::from_json(raw(&format!("\"{A}\"")));
        assert_eq!(handle.map(|h| h.as_str().to_owned()), Some(A.to_owned()));
        let mixed = "az09-_AZ".repeat(5) + "xyz";
        assert!(Handle::parse(&mixed).is_some());
        for bad in [
            &A[1..],
            &format!("{A}A"),
            &format!("{}=", &A[1..]),
            &format!("{}+", &A[1..]),
            &format!("{}/", &A[1..]),
            &format!("{}é", &A[2..]),
            &format!("{} ", &A[1..]),
            "",
        ] {
            assert_eq!(Handle::parse(bad), None, "{bad}");
            assert_eq!(Handle::from_json(raw(&format!("{:?}", bad))), None, "{bad}");
        }
        assert_eq!(Handle::from_json(raw("7")), None);
        // Escapes are decoded: `\u0041` is `A`.
        let escaped = format!("\"\\u0041{}\"", &A[1..]);
        assert_eq!(Handle::from_json(raw(&escaped)), Handle::parse(A));
        let escaped_bad = format!("\"\\u002b{}\"", &A[1..]);
        assert_eq!(Handle::from_json(raw(&escaped_bad)), None);
    }

    #[test]
    fn debug_never_shows_a_handle() {
        let Some(handle) = Handle::parse(A) else {
            panic!("valid handle")
        };
        assert!(!format!("{handle:?}").contains("AAAA"));
        let text = format!("[\"{A}\"]");
        let list = HandleList::new(raw(&text));
        assert!(!format!("{list:?}").contains("AAAA"));
        assert!(format!("{list:?}").contains("1 handles"));
    }

    #[test]
    fn a_list_is_an_array_of_1_to_1024_strings() {
        let handle = format!("\"{A}\"");
        let lists = |n: usize| format!("[{}]", vec![handle.as_str(); n].join(","));
        for n in [1, 2, 1024] {
            let text = lists(n);
            let list = HandleList::new(raw(&text));
            assert_eq!(list.map(HandleList::len), Some(n));
            assert!(list.is_some_and(|list| list.iter().all(|h| h.is_some())));
        }
        for bad in [
            "[]".to_owned(),
            lists(1025),
            "7".to_owned(),
            format!("\"{A}\""),
            format!("[{handle},7]"),
            format!("[{handle},null]"),
            format!("[[{handle}]]"),
            "{}".to_owned(),
        ] {
            assert!(HandleList::new(raw(&bad)).is_none(), "{bad}");
        }
        // White space JSON allows, escapes, and strings that are not handles.
        let text = format!("[ {handle} ,\n\"x\\\"y\" , \"\\u0041{}\" ]", &A[1..]);
        let Some(list) = HandleList::new(raw(&text)) else {
            panic!("valid list")
        };
        let handles: Vec<Option<Handle>> = list.iter().collect();
        assert_eq!(handles, vec![Handle::parse(A), None, Handle::parse(A)]);
    }

    #[test]
    fn seeds_make_distinct_valid_handles() {
        let a = Handle::from_seed(&[1, 2, 3]);
        let b = Handle::from_seed(&[1, 2, 4]);
        assert_ne!(a, b);
        assert_eq!(Handle::parse(a.as_str()), Some(a));
    }
}
