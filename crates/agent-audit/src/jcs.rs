//! JSON Canonicalization Scheme (RFC 8785) and the strict JSON reader that feeds it.
//!
//! Every record hash and signature in the log is computed over the canonical bytes produced
//! here, so two parties holding the same logical record must arrive at the same bytes no matter
//! how the JSON was formatted. This module owns both directions of that contract:
//!
//! * [`canonicalize`] / [`canonicalize_into`] turn a [`serde_json::Value`] into RFC 8785 bytes:
//!   object members sorted by UTF-16 code units, no insignificant whitespace, strings escaped as
//!   ECMAScript `JSON.stringify` does, numbers printed as ECMAScript `Number.prototype.toString`
//!   prints them (via `ryu-js`).
//! * [`parse_strict`] reads JSON text and refuses everything that would make "the same record"
//!   ambiguous: duplicate object keys (a verifier and a writer could each pick a different
//!   one), invalid UTF-8, NaN/Infinity, numbers outside the IEEE-754 double range, nesting
//!   deeper than [`MAX_DEPTH`], and anything after the value.
//!
//! # Integers
//!
//! RFC 8785 models every number as an IEEE-754 double, so an integer above 2^53 - 1 cannot be
//! represented faithfully: a JavaScript verifier would silently round it and compute a different
//! hash. Rather than round, [`canonicalize`] rejects such integers with
//! [`CanonError::UnsafeInteger`]. Callers that hold large counters (byte totals, nanosecond
//! timestamps, token counts summed over a long run) must convert them to decimal strings before
//! building the record. [`parse_strict`] does accept large integers, so a tampered record with
//! one fails at canonicalization rather than being misread.
//!
//! # Depth
//!
//! Both directions share one bound, [`MAX_DEPTH`], so any value the writer canonicalizes can be
//! read back by the verifier; it equals `serde_json`'s parser limit, so plain
//! `serde_json::from_slice` reads canonical output too. Both recursions stop at it, so a
//! hostile or buggy value can never overflow the stack.
//!
//! # Reading numbers
//!
//! [`parse_strict`] is its own small parser rather than a `serde_json` visitor: without its
//! `float_roundtrip` feature (off in this workspace's normal builds) `serde_json` rounds some
//! decimal inputs to a neighbouring double, so a verifier would recompute a different hash
//! for a record the writer signed correctly. Numbers here go through `str::parse::<f64>`,
//! which is correctly rounded; the resulting `Value` is typed as `serde_json` would type it
//! (`u64`, else `i64`, else `f64`).

use std::fmt;

use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Largest integer that survives an IEEE-754 double: 2^53 - 1.
pub const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// Nesting limit shared by [`canonicalize`] and [`parse_strict`].
///
/// The top-level value sits at level 1 and the members of an array or object one level below
/// it; no value may sit deeper than `MAX_DEPTH`, and an array or object must leave room for its
/// members even when it is empty. Hence at most `MAX_DEPTH - 1` (127) arrays/objects nest. That
/// is exactly `serde_json`'s parser limit, so whatever canonicalizes also parses back.
pub const MAX_DEPTH: usize = 128;

/// Why a value has no RFC 8785 canonical form.
#[derive(Debug, Clone, PartialEq)]
pub enum CanonError {
    /// An integer outside `-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER`; holds its decimal text.
    /// Store such values as strings.
    UnsafeInteger(String),
    /// Arrays/objects nest deeper than [`MAX_DEPTH`] allows.
    DepthExceeded,
    /// NaN or an infinity, which JSON cannot express (only reachable through [`write_f64`]).
    NonFiniteNumber,
    /// A number `serde_json` holds but cannot give as `u64`, `i64` or finite `f64`; holds its
    /// text. Only possible when some crate enables `serde_json/arbitrary_precision`.
    UnrepresentableNumber(String),
}

impl fmt::Display for CanonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsafeInteger(n) => write!(
                f,
                "integer {n} is outside the IEEE-754 safe range (magnitude at most \
                 {MAX_SAFE_INTEGER}); store it as a string"
            ),
            Self::DepthExceeded => write!(
                f,
                "value nests deeper than {MAX_DEPTH} levels (at most {} nested arrays/objects)",
                MAX_DEPTH - 1
            ),
            Self::NonFiniteNumber => f.write_str("NaN and Infinity have no JSON representation"),
            Self::UnrepresentableNumber(n) => {
                write!(f, "number {n} has no IEEE-754 double representation")
            }
        }
    }
}

impl std::error::Error for CanonError {}

/// Why [`parse_strict`] refused its input, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// 1-based line of the offending input.
    pub line: usize,
    /// 1-based column, counted in bytes from the start of the line.
    pub column: usize,
    /// Human-readable cause, e.g. `duplicate object key "id"`.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid JSON at line {}, column {}: {}",
            self.line, self.column, self.reason
        )
    }
}

impl std::error::Error for ParseError {}

/// Canonical bytes of `value` per RFC 8785.
///
/// # Errors
///
/// [`CanonError::UnsafeInteger`] for an integer beyond ±[`MAX_SAFE_INTEGER`] anywhere in
/// `value`, [`CanonError::DepthExceeded`] past [`MAX_DEPTH`].
pub fn canonicalize(value: &serde_json::Value) -> Result<Vec<u8>, CanonError> {
    let mut out = Vec::with_capacity(256);
    canonicalize_into(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical form to `out` (lets callers reuse a buffer; the hot loop of the writer uses this).
///
/// # Errors
///
/// As [`canonicalize`]. On error `out` is restored to its original length, so a reused buffer
/// never carries a half-written value into the next record.
pub fn canonicalize_into(value: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), CanonError> {
    write_rooted(value, out, MAX_DEPTH)
}

/// [`canonicalize_into`] with a tighter nesting limit: [`CanonError::DepthExceeded`] as soon as
/// an array or object sits below `max_containers` others (the top-level value counts as
/// none), which is where [`crate::payload::normalize`] would cut it. So a value this accepts
/// is one `normalize` would leave as it is, and a writer can skip that walk until it fails.
///
/// # Errors
///
/// As [`canonicalize_into`], with the limit above when it is below [`MAX_DEPTH`]'s.
pub fn canonicalize_within(
    value: &serde_json::Value,
    out: &mut Vec<u8>,
    max_containers: usize,
) -> Result<(), CanonError> {
    write_rooted(value, out, max_containers.saturating_add(1).min(MAX_DEPTH))
}

/// Writes `value` with `room` levels for it and its members; on error restores `out`.
fn write_rooted(value: &Value, out: &mut Vec<u8>, room: usize) -> Result<(), CanonError> {
    let start = out.len();
    let result = write_value(value, out, room);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Appends the ECMAScript `Number.prototype.toString` form of `f` (RFC 8785 section 3.2.2.3).
///
/// `-0` prints as `0`. Exposed for callers that format numbers outside a `Value` and for the
/// RFC 8785 Appendix B tests, whose NaN/Infinity rows a `Value` cannot hold.
///
/// # Errors
///
/// [`CanonError::NonFiniteNumber`] for NaN and the infinities; `out` is then untouched.
pub fn write_f64(f: f64, out: &mut Vec<u8>) -> Result<(), CanonError> {
    if !f.is_finite() {
        return Err(CanonError::NonFiniteNumber);
    }
    let mut buf = ryu_js::Buffer::new();
    out.extend_from_slice(buf.format_finite(f).as_bytes());
    Ok(())
}

/// Appends `s` as a JSON string literal, escaped per RFC 8785 section 3.2.2.2.
///
/// Only `"`, `\` and control characters below U+0020 are escaped (the five with short forms
/// as `\b \t \n \f \r`, the rest as lowercase `\u00xx`); everything else, including DEL and
/// U+2028/U+2029, is copied as UTF-8.
pub fn write_json_string(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut rest = s.as_bytes();
    // Most strings need no escaping: check that eight bytes at a time, then copy in one call.
    if is_clean(rest) {
        out.extend_from_slice(rest);
        out.push(b'"');
        return;
    }
    while let Some(pos) = rest.iter().position(|&b| needs_escape(b)) {
        let Some((clean, tail)) = rest.split_at_checked(pos) else {
            break;
        };
        out.extend_from_slice(clean);
        let Some((&byte, after)) = tail.split_first() else {
            break;
        };
        write_escape(byte, out);
        rest = after;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Parses JSON text strictly: rejects duplicate object keys (at any depth), invalid UTF-8,
/// NaN/Infinity literals, numbers out of f64 range, nesting deeper than [`MAX_DEPTH`] (128),
/// trailing garbage. The error says what and where (line, column, and for duplicates the key).
///
/// Otherwise it accepts exactly RFC 8259 JSON (no comments, trailing commas, byte order mark or
/// leading zeros) and builds the same `Value` as `serde_json::from_slice`, except that numbers
/// are always correctly rounded (see the module docs).
///
/// # Errors
///
/// A [`ParseError`] at the first offending byte (for a duplicate key: the key's opening quote).
pub fn parse_strict(input: &[u8]) -> Result<serde_json::Value, ParseError> {
    // Validating the whole input up front reports bad bytes anywhere (not only inside strings)
    // with an exact position, and leaves the parser free to slice `&str` without re-checking.
    let text = std::str::from_utf8(input).map_err(|e| {
        let (line, column) = position_of(input, e.valid_up_to());
        ParseError {
            line,
            column,
            reason: "invalid UTF-8 byte sequence".to_owned(),
        }
    })?;
    Parser::new(text).document()
}

/// `room`: the levels left for `value` and what it holds (see [`enter`]).
fn write_value(value: &Value, out: &mut Vec<u8>, room: usize) -> Result<(), CanonError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            let inner = enter(room)?;
            out.push(b'[');
            let mut first = true;
            for item in items {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_value(item, out, inner)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let inner = enter(room)?;
            if needs_utf16_sort(map) {
                write_object_utf16_sorted(map, out, inner)?;
            } else {
                out.push(b'{');
                let mut first = true;
                for (key, item) in map {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_json_string(key, out);
                    out.push(b':');
                    write_value(item, out, inner)?;
                }
                out.push(b'}');
            }
        }
    }
    Ok(())
}

/// Depth check for an array/object with `room` levels left for it and its members (the
/// top-level value starts with [`MAX_DEPTH`]: a container with `depth` containers around it has
/// `MAX_DEPTH - depth`); returns its members' room.
fn enter(room: usize) -> Result<usize, CanonError> {
    if room <= 1 {
        return Err(CanonError::DepthExceeded);
    }
    Ok(room - 1)
}

/// Whether iterating `map` as stored would not give RFC 8785 order.
///
/// UTF-8 byte order equals UTF-16 code-unit order except when a supplementary-plane character
/// (UTF-8 lead byte F0..F4, UTF-16 surrogates D800..DFFF) meets one in U+E000..U+FFFF (lead
/// byte EE/EF), so keys free of bytes >= 0xEE may keep the map's byte order. The adjacency
/// check guards against a build where some crate turns on `serde_json/preserve_order`, making
/// `Map` insertion-ordered.
fn needs_utf16_sort(map: &Map<String, Value>) -> bool {
    let mut prev: Option<&[u8]> = None;
    for key in map.keys() {
        let bytes = key.as_bytes();
        if !key.is_ascii() && bytes.iter().any(|&b| b >= 0xEE) {
            return true;
        }
        if prev.is_some_and(|p| p >= bytes) {
            return true;
        }
        prev = Some(bytes);
    }
    false
}

// Kept out of `write_value` so the rare sort buffer does not enlarge every recursion frame.
#[inline(never)]
fn write_object_utf16_sorted(
    map: &Map<String, Value>,
    out: &mut Vec<u8>,
    inner: usize,
) -> Result<(), CanonError> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    out.push(b'{');
    let mut first = true;
    for (key, item) in entries {
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_string(key, out);
        out.push(b':');
        write_value(item, out, inner)?;
    }
    out.push(b'}');
    Ok(())
}

/// Appends `u` as RFC 8785 text; [`CanonError::UnsafeInteger`] beyond [`MAX_SAFE_INTEGER`].
pub(crate) fn write_safe_u64(u: u64, out: &mut Vec<u8>) -> Result<(), CanonError> {
    if u > MAX_SAFE_INTEGER {
        return Err(CanonError::UnsafeInteger(u.to_string()));
    }
    write_u64(u, out);
    Ok(())
}

/// Appends `i` as RFC 8785 text; [`CanonError::UnsafeInteger`] beyond ±[`MAX_SAFE_INTEGER`].
pub(crate) fn write_safe_i64(i: i64, out: &mut Vec<u8>) -> Result<(), CanonError> {
    let magnitude = i.unsigned_abs();
    if magnitude > MAX_SAFE_INTEGER {
        return Err(CanonError::UnsafeInteger(i.to_string()));
    }
    if i < 0 {
        out.push(b'-');
    }
    write_u64(magnitude, out);
    Ok(())
}

fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<(), CanonError> {
    if let Some(u) = n.as_u64() {
        write_safe_u64(u, out)?;
    } else if let Some(i) = n.as_i64() {
        write_safe_i64(i, out)?;
    } else if let Some(f) = n.as_f64() {
        write_f64(f, out)?;
    } else {
        return Err(CanonError::UnrepresentableNumber(n.to_string()));
    }
    Ok(())
}

// Integers are the most common numbers in records; this skips the float formatter entirely.
fn write_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut len = 0;
    for slot in buf.iter_mut().rev() {
        // `n % 10` is a single digit, so the narrowing cannot lose information.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(buf.len() - len..).unwrap_or_default());
}

/// Whether no byte of `bytes` needs escaping, tested a word at a time (SWAR).
fn is_clean(bytes: &[u8]) -> bool {
    let word = |chunk: &[u8]| <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
    if bytes.len() < 8 {
        return word_is_clean(short_word(bytes));
    }
    let mut chunks = bytes.chunks_exact(8);
    let mut dirty = false;
    for chunk in &mut chunks {
        dirty |= !word_is_clean(word(chunk));
    }
    // The tail is checked as the last eight bytes, overlapping the words
    // already seen, instead of byte by byte.
    if !chunks.remainder().is_empty() {
        let tail = bytes.get(bytes.len() - 8..).unwrap_or_default();
        dirty |= !word_is_clean(word(tail));
    }
    !dirty
}

/// A word holding every byte of `bytes` (shorter than eight), some of them
/// twice, the rest spaces: clean exactly when `bytes` is. Built from loads of
/// the input, not from bytes copied into a stack buffer and read back as one
/// word, which stalls on store forwarding (that copy was a third of the time
/// spent writing JSON strings).
#[inline(always)]
fn short_word(bytes: &[u8]) -> u64 {
    const SPACES: u64 = 0x2020_2020_2020_2020;
    let n = bytes.len();
    if n >= 4 {
        // Two overlapping four-byte loads cover all n bytes.
        let half = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0x2020_2020, u32::from_le_bytes)
        };
        u64::from(half(0)) | u64::from(half(n - 4)) << 32
    } else if n > 0 {
        // First, middle and last byte: every byte of a string of 1 to 3.
        let at = |i: usize| u64::from(bytes.get(i).copied().unwrap_or(b' '));
        (SPACES & !0xff_ffff) | at(0) | at(n / 2) << 8 | at(n - 1) << 16
    } else {
        SPACES
    }
}

/// Whether none of the eight bytes in `x` needs escaping.
#[inline(always)]
fn word_is_clean(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Nonzero iff some byte of `x` is below `n` (n <= 0x80); exact as a yes/no answer.
    let any_below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    (any_below(x, 0x20)
        | any_below(x ^ (ONES * u64::from(b'"')), 1)
        | any_below(x ^ (ONES * u64::from(b'\\')), 1))
        == 0
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

fn write_escape(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0a => b'n',
        0x0c => b'f',
        0x0d => b'r',
        _ => {
            let hex = |nibble: u8| HEX[usize::from(nibble & 0x0f)];
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(byte >> 4), hex(byte)]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// Recursive-descent reader behind [`parse_strict`].
///
/// Hand-written rather than a `serde_json` visitor because `serde_json` without its
/// `float_roundtrip` feature rounds some decimal inputs to the wrong double (a quarter of the
/// es6testfile sample, and the RFC 8785 section 3.2.2 example), and a verifier that misreads a
/// number recomputes a different hash. `str::parse::<f64>` is correctly rounded. Recursion is
/// bounded by [`MAX_DEPTH`].
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn error(&self, at: usize, reason: impl Into<String>) -> ParseError {
        let (line, column) = position_of(self.bytes, at);
        ParseError {
            line,
            column,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn document(&mut self) -> Result<Value, ParseError> {
        let value = self.value(MAX_DEPTH)?;
        self.skip_whitespace();
        if self.pos < self.bytes.len() {
            return Err(self.error(self.pos, "trailing characters after the JSON value"));
        }
        Ok(value)
    }

    /// A value with `room` levels left for it and what it holds (see [`enter`]).
    fn value(&mut self, room: usize) -> Result<Value, ParseError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error(self.pos, "unexpected end of input, expected a value")),
            Some(b'{') => self.object(room),
            Some(b'[') => self.array(room),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) if self.at_non_finite() => Err(self.non_finite_error()),
            Some(_) => Err(self.error(self.pos, "expected a JSON value")),
        }
    }

    fn at_non_finite(&self) -> bool {
        let rest = self.rest();
        ["NaN", "Infinity", "-Infinity", "-NaN", "+Infinity", "+NaN"]
            .iter()
            .any(|word| rest.starts_with(word.as_bytes()))
    }

    fn non_finite_error(&self) -> ParseError {
        self.error(self.pos, "NaN and Infinity are not valid JSON numbers")
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ParseError> {
        if self.rest().starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error(self.pos, format!("invalid literal, expected `{word}`")))
        }
    }

    fn nest(&self, room: usize) -> Result<usize, ParseError> {
        enter(room).map_err(|e| self.error(self.pos, e.to_string()))
    }

    fn array(&mut self, room: usize) -> Result<Value, ParseError> {
        let inner = self.nest(room)?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(inner)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err(self.error(self.pos, "unexpected end of input in array")),
                Some(_) => {
                    return Err(self.error(self.pos, "expected `,` or `]` after array element"));
                }
            }
        }
    }

    fn object(&mut self, room: usize) -> Result<Value, ParseError> {
        let inner = self.nest(room)?;
        self.pos += 1;
        let mut map = Map::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_whitespace();
            let key_at = self.pos;
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.error(self.pos, "unexpected end of input in object")),
                Some(_) => return Err(self.error(self.pos, "expected a string key")),
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error(self.pos, "expected `:` after object key"));
            }
            self.pos += 1;
            match map.entry(key) {
                Entry::Occupied(taken) => {
                    let mut quoted = Vec::with_capacity(taken.key().len() + 2);
                    write_json_string(taken.key(), &mut quoted);
                    let reason =
                        format!("duplicate object key {}", String::from_utf8_lossy(&quoted));
                    return Err(self.error(key_at, reason));
                }
                Entry::Vacant(slot) => {
                    slot.insert(self.value(inner)?);
                }
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                None => return Err(self.error(self.pos, "unexpected end of input in object")),
                Some(_) => {
                    return Err(self.error(self.pos, "expected `,` or `}` after object member"));
                }
            }
        }
    }

    /// A string literal starting at the opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let mut owned = String::new();
        let mut run_start = self.pos;
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error(open, "unterminated string"));
            };
            match byte {
                b'"' => {
                    owned.push_str(self.slice(run_start, self.pos)?);
                    self.pos += 1;
                    return Ok(owned);
                }
                b'\\' => {
                    owned.push_str(self.slice(run_start, self.pos)?);
                    self.escape(&mut owned)?;
                    run_start = self.pos;
                }
                0x00..=0x1f => {
                    return Err(self.error(
                        self.pos,
                        format!("control character U+{byte:04X} must be escaped in a string"),
                    ));
                }
                _ => self.pos += 1,
            }
        }
    }

    // Callers only pass positions of ASCII bytes, which are always char boundaries.
    fn slice(&self, from: usize, to: usize) -> Result<&'a str, ParseError> {
        self.text
            .get(from..to)
            .ok_or_else(|| self.error(from, "string slice off a character boundary"))
    }

    /// Decodes the escape at `self.pos` (the backslash) into `out`.
    fn escape(&mut self, out: &mut String) -> Result<(), ParseError> {
        let at = self.pos;
        self.pos += 1;
        let Some(kind) = self.peek() else {
            return Err(self.error(at, "unterminated string"));
        };
        self.pos += 1;
        let decoded = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4(at)?;
                match unit {
                    0xD800..=0xDBFF => {
                        if !self.rest().starts_with(b"\\u") {
                            return Err(self.error(at, "lone leading surrogate in \\u escape"));
                        }
                        self.pos += 2;
                        let low = self.hex4(at)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.error(at, "lone leading surrogate in \\u escape"));
                        }
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).ok_or_else(|| self.error(at, "invalid \\u escape"))?
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.error(at, "lone trailing surrogate in \\u escape"));
                    }
                    _ => {
                        char::from_u32(unit).ok_or_else(|| self.error(at, "invalid \\u escape"))?
                    }
                }
            }
            _ => return Err(self.error(at, "invalid escape sequence")),
        };
        out.push(decoded);
        Ok(())
    }

    fn hex4(&mut self, escape_at: usize) -> Result<u32, ParseError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error(escape_at, "truncated \\u escape"))?;
        let mut unit = 0;
        for &d in digits {
            let nibble = char::from(d)
                .to_digit(16)
                .ok_or_else(|| self.error(escape_at, "invalid hex digit in \\u escape"))?;
            unit = unit * 16 + nibble;
        }
        self.pos += 4;
        Ok(unit)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number, typed as `serde_json` types it: `u64`, else `i64`, else `f64`.
    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error(start, "leading zeros are not allowed in numbers"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => {
                self.pos = start;
                if self.at_non_finite() {
                    return Err(self.non_finite_error());
                }
                return Err(self.error(start, "invalid number"));
            }
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error(self.pos, "expected a digit after the decimal point"));
            }
            integral = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error(self.pos, "expected a digit in the exponent"));
            }
            integral = false;
        }
        let literal = self.slice(start, self.pos)?;
        if integral {
            if negative {
                match literal.parse::<i64>() {
                    // serde_json reads `-0` as the double -0.0; keep the same Value.
                    Ok(0) => {}
                    Ok(i) => return Ok(Value::Number(i.into())),
                    Err(_) => {}
                }
            } else if let Ok(u) = literal.parse::<u64>() {
                return Ok(Value::Number(u.into()));
            }
        }
        let parsed = literal
            .parse::<f64>()
            .map_err(|_| self.error(start, "invalid number"))?;
        Number::from_f64(parsed)
            .map(Value::Number)
            .ok_or_else(|| self.error(start, "number out of IEEE-754 double range"))
    }
}

/// 1-based line and byte column of `offset`.
fn position_of(input: &[u8], offset: usize) -> (usize, usize) {
    let before = input.get(..offset).unwrap_or(input);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, before.len() - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon_str(value: &Value) -> String {
        String::from_utf8(canonicalize(value).unwrap()).unwrap()
    }

    /// Parses `input` strictly, canonicalizes it and compares with `expected` byte for byte.
    fn check_vector(name: &str, input: &str, expected: &str) {
        let value = parse_strict(input.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: input does not parse: {e}"));
        let got = canonicalize(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got,
            expected.as_bytes(),
            "{name}: got {}",
            String::from_utf8_lossy(&got)
        );
        // Canonical output is a fixed point.
        let again = canonicalize(&parse_strict(&got).unwrap()).unwrap();
        assert_eq!(again, got, "{name}: not idempotent");
    }

    macro_rules! vector {
        ($dir:literal, $name:literal) => {
            check_vector(
                concat!($dir, "/", $name),
                include_str!(concat!("../tests/vectors/jcs/", $dir, "/input/", $name)),
                include_str!(concat!("../tests/vectors/jcs/", $dir, "/output/", $name)),
            )
        };
    }

    #[test]
    fn cyberphone_testdata() {
        vector!("cyberphone", "arrays.json");
        vector!("cyberphone", "french.json");
        vector!("cyberphone", "simpleString.json");
        vector!("cyberphone", "structures.json");
        vector!("cyberphone", "unicode.json");
        vector!("cyberphone", "values.json");
        vector!("cyberphone", "weird.json");
    }

    #[test]
    fn rfc8785_sample_3_2_2() {
        vector!("rfc8785", "sample-3.2.2.json");
    }

    #[test]
    fn rfc8785_sorting_3_2_3_uses_utf16_order() {
        vector!("rfc8785", "sorting-3.2.3.json");
        let value = parse_strict(
            include_str!("../tests/vectors/jcs/rfc8785/input/sorting-3.2.3.json").as_bytes(),
        )
        .unwrap();
        let Value::Object(map) = &value else {
            panic!("not an object")
        };
        assert!(
            needs_utf16_sort(map),
            "the RFC example must take the slow path"
        );
        // Byte order would put U+FB33 before U+1F600; RFC 8785 puts it last.
        let text = canon_str(&value);
        assert!(text.find('\u{1F600}').unwrap() < text.find('\u{FB33}').unwrap());
    }

    /// Lines of `hex-ieee,expected`; an empty `expected` means NaN/Infinity (rejected).
    fn check_number_lines(name: &str, data: &str) -> usize {
        let mut count = 0;
        for line in data.lines().filter(|l| !l.is_empty()) {
            let (hex, expected) = line.split_once(',').unwrap();
            let f = f64::from_bits(u64::from_str_radix(hex, 16).unwrap());
            let mut out = Vec::new();
            let result = write_f64(f, &mut out);
            if expected.is_empty() {
                assert_eq!(result, Err(CanonError::NonFiniteNumber), "{name}: {line}");
                assert!(Number::from_f64(f).is_none());
            } else {
                result.unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), expected, "{name}: {line}");
                // Same answer through a Value, the path records take.
                let value = Value::Number(Number::from_f64(f).unwrap());
                assert_eq!(canon_str(&value), expected, "{name}: {line} as Value");
            }
            count += 1;
        }
        count
    }

    #[test]
    fn rfc8785_appendix_b_numbers() {
        let data = include_str!("../tests/vectors/jcs/rfc8785/appendix-b-numbers.txt");
        assert_eq!(check_number_lines("appendix B", data), 26);
    }

    #[test]
    fn es6_number_sample() {
        let data = include_str!("../tests/vectors/jcs/es6numbers/es6testfile-sample.txt");
        assert_eq!(check_number_lines("es6testfile", data), 502);
    }

    #[test]
    fn es6_number_sample_parses_back_to_the_same_double() {
        // A verifier re-parses canonical text; the double must survive exactly or the hash moves.
        let data = include_str!("../tests/vectors/jcs/es6numbers/es6testfile-sample.txt");
        let mut mismatches = Vec::new();
        for line in data.lines().filter(|l| !l.is_empty()) {
            let (hex, expected) = line.split_once(',').unwrap();
            let bits = u64::from_str_radix(hex, 16).unwrap();
            let parsed = parse_strict(expected.as_bytes()).unwrap();
            let back = parsed.as_f64().unwrap();
            // -0 canonicalizes to 0, so compare values, not bits, for zero.
            if back.to_bits() != bits && !(back == 0.0 && f64::from_bits(bits) == 0.0) {
                mismatches.push(line.to_owned());
            }
        }
        assert!(mismatches.is_empty(), "{mismatches:?}");
    }

    #[test]
    fn numbers() {
        assert_eq!(canon_str(&json!(-0.0)), "0");
        assert_eq!(canon_str(&json!(0)), "0");
        assert_eq!(canon_str(&json!(56.0)), "56");
        assert_eq!(canon_str(&json!(1e21)), "1e+21");
        assert_eq!(canon_str(&json!(1e20)), "100000000000000000000");
        assert_eq!(canon_str(&json!(0.1)), "0.1");
        assert_eq!(canon_str(&json!(-1.5e-7)), "-1.5e-7");
        assert_eq!(canon_str(&json!(u64::MIN)), "0");
        assert_eq!(canon_str(&json!(i64::from(-42))), "-42");
        assert_eq!(canon_str(&json!(1234567890_u64)), "1234567890");
        assert_eq!(
            parse_strict(b"-0").map(|v| canon_str(&v)),
            Ok("0".to_owned())
        );
        assert_eq!(
            parse_strict(b"[1.0, 1E2, 12e-1]").map(|v| canon_str(&v)),
            Ok("[1,100,1.2]".to_owned())
        );
        let mut out = Vec::new();
        assert_eq!(
            write_f64(f64::NAN, &mut out),
            Err(CanonError::NonFiniteNumber)
        );
        assert_eq!(
            write_f64(f64::NEG_INFINITY, &mut out),
            Err(CanonError::NonFiniteNumber)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn unsafe_integers_rejected() {
        let max = MAX_SAFE_INTEGER;
        let min = -9_007_199_254_740_991_i64;
        assert_eq!(canon_str(&json!(max)), "9007199254740991");
        assert_eq!(canon_str(&json!(min)), "-9007199254740991");
        for (value, text) in [
            (json!(max + 1), "9007199254740992"),
            (json!(min - 1), "-9007199254740992"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(i64::MIN), "-9223372036854775808"),
        ] {
            assert_eq!(
                canonicalize(&value),
                Err(CanonError::UnsafeInteger(text.to_owned()))
            );
        }
        // Nested, through the parser, and with the buffer left as it was.
        let value = parse_strict(br#"{"a":[1,{"b":9007199254740993}]}"#).unwrap();
        let mut out = b"prefix".to_vec();
        let err = canonicalize_into(&value, &mut out).unwrap_err();
        assert_eq!(
            err,
            CanonError::UnsafeInteger("9007199254740993".to_owned())
        );
        assert!(err.to_string().contains("string"));
        assert_eq!(out, b"prefix");
    }

    #[test]
    fn string_escaping() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        assert_eq!(
            canon_str(&json!(all_controls)),
            "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\
             \\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\
             \\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\""
        );
        assert_eq!(
            canon_str(&json!(
                "q\"b\\s/ del\u{7f} ls\u{2028} ps\u{2029} \u{80}é€😀"
            )),
            "\"q\\\"b\\\\s/ del\u{7f} ls\u{2028} ps\u{2029} \u{80}é€😀\""
        );
        assert_eq!(canon_str(&json!("")), "\"\"");
        assert_eq!(canon_str(&json!({"\n": "\u{1f}"})), "{\"\\n\":\"\\u001f\"}");
    }

    #[test]
    fn word_at_a_time_clean_check_matches_bytewise() {
        let specials = [0x00, 0x1f, b'"', b'\\'];
        let harmless = [0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff];
        for len in 0..40 {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(is_clean(&base));
            for at in 0..len {
                for byte in specials.iter().chain(&harmless) {
                    let mut bytes = base.clone();
                    bytes[at] = *byte;
                    let bytewise = !bytes.iter().any(|&b| needs_escape(b));
                    assert_eq!(is_clean(&bytes), bytewise, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn utf16_sort_slow_path() {
        // U+E000, U+FFFF and U+FB33 sort after U+1F600 (surrogates D83D..) in UTF-16.
        let value = json!({
            "\u{FFFF}": 1, "\u{E000}": 2, "\u{1F600}": 3, "\u{10000}": 4, "z": 5, "\u{FB33}": 6
        });
        let Value::Object(map) = &value else {
            panic!("not an object")
        };
        assert!(needs_utf16_sort(map));
        assert_eq!(
            canon_str(&value),
            "{\"z\":5,\"\u{10000}\":4,\"\u{1F600}\":3,\"\u{E000}\":2,\"\u{FB33}\":6,\"\u{FFFF}\":1}"
        );
        // Keys that differ only after a common prefix, and nested objects.
        let value = json!({"a": {"k\u{F000}": 1, "k\u{1F600}": 2, "k": 3}});
        assert_eq!(
            canon_str(&value),
            "{\"a\":{\"k\":3,\"k\u{1F600}\":2,\"k\u{F000}\":1}}"
        );
        // Keys below U+E000 keep the fast path; anything from U+E000 up takes the slow one.
        let fast = json!({"a": 3, "é": 2, "\u{D7FF}": 1}); // byte order even if `Map` keeps insertion order
        let slow = json!({"\u{1F600}": 1, "a": 2});
        for (value, expect_slow) in [(&fast, false), (&slow, true)] {
            let Value::Object(map) = value else {
                panic!("not an object")
            };
            assert_eq!(needs_utf16_sort(map), expect_slow, "{value}");
        }
        assert_eq!(canon_str(&fast), "{\"a\":3,\"é\":2,\"\u{D7FF}\":1}");
    }

    #[test]
    fn utf16_sort_matches_reference_on_many_keys() {
        // Every pair from a set that straddles the byte-order/UTF-16-order boundary.
        let atoms = [
            "",
            "a",
            "~",
            "\u{7F}",
            "\u{80}",
            "\u{7FF}",
            "\u{800}",
            "\u{D7FF}",
            "\u{E000}",
            "\u{EFFF}",
            "\u{F000}",
            "\u{FB33}",
            "\u{FFFD}",
            "\u{FFFF}",
            "\u{10000}",
            "\u{1F600}",
            "\u{10FFFF}",
        ];
        let mut map = Map::new();
        for a in atoms {
            for b in atoms {
                map.insert(format!("{a}{b}"), Value::Null);
            }
        }
        let mut expected: Vec<&String> = map.keys().collect();
        expected.sort_by(|x, y| {
            let x: Vec<u16> = x.encode_utf16().collect();
            let y: Vec<u16> = y.encode_utf16().collect();
            x.cmp(&y)
        });
        let mut want = b"{".to_vec();
        for (i, key) in expected.iter().enumerate() {
            if i > 0 {
                want.push(b',');
            }
            write_json_string(key, &mut want);
            want.extend_from_slice(b":null");
        }
        want.push(b'}');
        assert_eq!(canonicalize(&Value::Object(map)).unwrap(), want);
    }

    fn nested_arrays(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn depth_limit_agrees_between_parser_and_canonicalizer() {
        let ok = nested_arrays(MAX_DEPTH - 1);
        let value = parse_strict(ok.as_bytes()).unwrap();
        assert_eq!(canonicalize(&value).unwrap(), ok.as_bytes());

        let too_deep = nested_arrays(MAX_DEPTH);
        let err = parse_strict(too_deep.as_bytes()).unwrap_err();
        assert_eq!((err.line, err.column), (1, MAX_DEPTH));
        assert!(err.reason.contains("deeper than 128"), "{err}");
        let err = parse_strict(format!("{{\"a\":{}", too_deep).as_bytes()).unwrap_err();
        assert!(err.reason.contains("deeper than 128"), "{err}");
        // Same bound as serde_json, so canonical output also reads back with plain serde_json.
        assert!(serde_json::from_str::<Value>(&ok).is_ok());
        assert!(serde_json::from_str::<Value>(&too_deep).is_err());

        // Build the same value by hand: the parser cannot produce it.
        let mut value = Value::Array(Vec::new());
        for _ in 1..MAX_DEPTH {
            value = Value::Array(vec![value]);
        }
        assert_eq!(canonicalize(&value), Err(CanonError::DepthExceeded));
        let mut objects = json!({});
        for _ in 1..MAX_DEPTH {
            objects = json!({ "k": objects });
        }
        assert_eq!(canonicalize(&objects), Err(CanonError::DepthExceeded));
        assert!(parse_strict(canon_str(&json!({"k": 1})).as_bytes()).is_ok());
    }

    #[test]
    fn very_deep_value_does_not_overflow_the_stack() {
        let mut value = Value::Null;
        for _ in 0..100_000 {
            value = Value::Array(vec![value]);
        }
        let mut out = Vec::new();
        assert_eq!(
            canonicalize_into(&value, &mut out),
            Err(CanonError::DepthExceeded)
        );
        assert!(out.is_empty());
        // serde_json drops recursively; unwind it by hand so the test itself stays shallow.
        while let Value::Array(mut items) = value {
            value = items.pop().unwrap_or(Value::Null);
        }
        let deep_text = nested_arrays(100_000);
        assert!(parse_strict(deep_text.as_bytes()).is_err());
    }

    #[test]
    fn duplicate_keys_rejected_top_level() {
        let err = parse_strict(br#"{"a":1,"b":2,"a":3}"#).unwrap_err();
        assert_eq!(err.reason, r#"duplicate object key "a""#);
        assert_eq!((err.line, err.column), (1, 14), "points at the second key");
        assert!(err.to_string().contains("line 1, column 14"), "{err}");
    }

    #[test]
    fn duplicate_keys_rejected_nested() {
        let input = b"{\n  \"outer\": [\n    {\"id\": 1,\n     \"id\": 2}\n  ]\n}";
        let err = parse_strict(input).unwrap_err();
        assert_eq!(err.reason, r#"duplicate object key "id""#);
        assert_eq!((err.line, err.column), (4, 6));
        // Keys equal after unescaping are the same key.
        let err = parse_strict(br#"{"x":{"\u00e9":1,"\u00E9":2}}"#).unwrap_err();
        assert_eq!(err.reason, "duplicate object key \"\u{e9}\"");
        // Control characters in the key are shown escaped.
        let err = parse_strict(br#"{"\n":1,"\n":2}"#).unwrap_err();
        assert_eq!(err.reason, r#"duplicate object key "\n""#);
        // Same key in sibling objects is fine.
        assert!(parse_strict(br#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn invalid_utf8_rejected() {
        for (input, column) in [
            (&b"\"\xff\""[..], 2),
            (b"{\"k\":\"ok\xc3\"}", 9),
            (b"\"\xed\xa0\x80\"", 2), // encoded surrogate
            (b"\"\xc0\xaf\"", 2),     // overlong '/'
            (b"[1,\n \xfe]", 2),      // outside any string
        ] {
            let err = parse_strict(input).unwrap_err();
            assert_eq!(err.reason, "invalid UTF-8 byte sequence", "{input:?}");
            assert_eq!(err.column, column, "{input:?}");
        }
        let err = parse_strict(b"[1,\n \xfe]").unwrap_err();
        assert_eq!(err.line, 2);
        // Lone surrogate escapes cannot become a Rust string either.
        assert!(parse_strict(br#""\ud800""#).is_err());
    }

    #[test]
    fn non_finite_and_out_of_range_numbers_rejected() {
        for input in [
            &b"NaN"[..],
            b"[1, NaN]",
            b"Infinity",
            b"-Infinity",
            b"{\n \"a\": -Infinity}",
            b"[Infinity]",
        ] {
            let err = parse_strict(input).unwrap_err();
            assert_eq!(
                err.reason,
                "NaN and Infinity are not valid JSON numbers",
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        for input in [&b"1e400"[..], b"[-1e309]"] {
            let err = parse_strict(input).unwrap_err();
            assert!(err.reason.contains("out of"), "{err}");
        }
        // Tiny numbers underflow to zero rather than failing, as in ECMAScript.
        assert_eq!(
            parse_strict(b"1e-400").map(|v| canon_str(&v)),
            Ok("0".into())
        );
        assert_eq!(
            parse_strict(b"nul").unwrap_err().reason,
            "invalid literal, expected `null`"
        );
    }

    #[test]
    fn trailing_garbage_rejected() {
        for input in [
            &b"{} x"[..],
            b"1 2",
            b"[1]]",
            b"{\"a\":1}\n,",
            b"\"s\"\"t\"",
        ] {
            let err = parse_strict(input).unwrap_err();
            assert_eq!(err.reason, "trailing characters after the JSON value");
        }
        let err = parse_strict(b"{}\n\n  x").unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        // Whitespace after the value is fine.
        assert!(parse_strict(b" {} \r\n\t").is_ok());
    }

    #[test]
    fn other_malformed_input_rejected() {
        for input in [
            &b""[..],
            b"   ",
            b"{",
            b"[1,]",
            b"{\"a\":1,}",
            b"{a:1}",
            b"'x'",
            b"01",
            b"\"\t\"",
            b"// c\n1",
            b"\xef\xbb\xbf{}",
        ] {
            assert!(
                parse_strict(input).is_err(),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn parse_then_canonicalize_round_trip() {
        let value = json!({
            "id": "0190b0c4-7d2e-7c4e-9f0a-1b2c3d4e5f60", "seq": 42, "ok": true, "none": null,
            "args": {"path": "/tmp/x", "n": [1, 2.5, -3, 1e-7]}, "note": "line\nbreak"
        });
        let bytes = canonicalize(&value).unwrap();
        assert_eq!(parse_strict(&bytes).unwrap(), value);
        let mut buf = b"[".to_vec();
        canonicalize_into(&value, &mut buf).unwrap();
        assert_eq!(
            buf.get(1..),
            Some(bytes.as_slice()),
            "appends after existing bytes"
        );
    }

    #[test]
    fn strings_parse() {
        for (input, want) in [
            (r#""plain""#, "plain"),
            (r#""\u00e9\u20AC\ud83d\ude00""#, "é€😀"),
            (r#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{c}\n\r\t"),
            (r#""a\u0000b""#, "a\u{0}b"),
            (
                "\"raw é € 😀 \u{7f} \u{2028}\"",
                "raw é € 😀 \u{7f} \u{2028}",
            ),
        ] {
            assert_eq!(parse_strict(input.as_bytes()), Ok(json!(want)), "{input}");
        }
        for (input, reason) in [
            (r#""\ud800""#, "lone leading surrogate in \\u escape"),
            (r#""\ud800\u0041""#, "lone leading surrogate in \\u escape"),
            (r#""\udc00""#, "lone trailing surrogate in \\u escape"),
            (r#""\x""#, "invalid escape sequence"),
            (r#""\u12g4""#, "invalid hex digit in \\u escape"),
            (r#""\u12""#, "truncated \\u escape"),
            (
                "\"a\tb\"",
                "control character U+0009 must be escaped in a string",
            ),
            (r#""open"#, "unterminated string"),
        ] {
            assert_eq!(
                parse_strict(input.as_bytes()).unwrap_err().reason,
                reason,
                "{input}"
            );
        }
    }

    #[test]
    fn parse_agrees_with_serde_json_on_valid_input() {
        for input in [
            "null",
            "true",
            " [ false , 0 , -0 , 1 , -1 , 1.5 , -2.5e3 , 1E2 , 0.0 , 18446744073709551615 ] ",
            "[18446744073709551616, -9223372036854775808, -9223372036854775809, 1e-400]",
            r#"{"b":{"y":[],"x":{}},"a":"s\u0041\n","":0}"#,
            "\r\n\t{\"k\" :\t\"v\"\r\n}",
        ] {
            let ours = parse_strict(input.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(input).unwrap();
            assert_eq!(ours, theirs, "{input}");
            // Number types too (PartialEq on Number already distinguishes them; be explicit).
            assert_eq!(ours.to_string(), theirs.to_string(), "{input}");
        }
        let zero = parse_strict(b"-0").unwrap();
        assert!(
            zero.as_f64()
                .is_some_and(|f| f == 0.0 && f.is_sign_negative())
        );
    }

    #[test]
    fn error_display() {
        let e = ParseError {
            line: 3,
            column: 7,
            reason: "trailing characters after the JSON value".into(),
        };
        assert_eq!(
            e.to_string(),
            "invalid JSON at line 3, column 7: trailing characters after the JSON value"
        );
        assert!(CanonError::DepthExceeded.to_string().contains("128"));
        let _: &dyn std::error::Error = &e;
        let _: &dyn std::error::Error = &CanonError::NonFiniteNumber;
    }
}
