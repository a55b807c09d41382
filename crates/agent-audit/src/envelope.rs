//! A record envelope under construction, held as canonical JSON text per
//! field rather than as a `serde_json::Map`.
//!
//! The writer used to build every envelope as a `Map<String, Value>` and
//! canonicalize it whole when sealing: a B-tree of owned keys and values
//! built, walked and freed per record. Here each field's value is written
//! once, as RFC 8785 text, into one reused buffer; sealing sorts the field
//! names (RFC 8785 order: UTF-16 code units) and joins the pieces. The
//! output is byte for byte what canonicalizing the equivalent `Map` gives
//! (a test checks it against [`crate::jcs::canonicalize`]).

use std::borrow::Cow;
use std::ops::Range;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::canon_ser;
use crate::error::{AuditError, ErrorKind, Result};
use crate::jcs;

/// One field: its name, where its `"name":value` text sits in the buffer,
/// where the value starts, and the name's sort key ([`sort_prefix`]).
#[derive(Debug)]
struct Field {
    key: Cow<'static, str>,
    entry: Range<usize>,
    value_start: usize,
    prefix: u64,
}

/// The first eight bytes of an ASCII name, big-endian, zero-padded: an
/// order consistent with the names' byte order, so sorting by it and then
/// by the whole name gives RFC 8785 order at one integer compare for most
/// pairs (record field names differ within eight bytes).
fn sort_prefix(name: &str) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(name.as_bytes()) {
        *d = *s;
    }
    u64::from_be_bytes(b)
}

/// Envelope fields as canonical JSON text. Reuse one with [`Envelope::clear`]
/// to keep its buffers.
///
/// Each field is written once as `"name":value`, so sealing only orders
/// the fields and joins their bytes.
#[derive(Debug)]
pub struct Envelope {
    buf: Vec<u8>,
    fields: Vec<Field>,
    // Reused by `write_canonical`: sort prefix (high 64 bits) and field
    // index (low 64 bits).
    order: Vec<u128>,
    // Whether every name is ASCII (then byte order is RFC 8785 order).
    all_ascii: bool,
    // Orders found for recent ASCII field sets with distinct prefixes:
    // the prefixes in the order the fields were added, and the order.
    recent: Vec<(Vec<u64>, Vec<u128>)>,
    next_recent: usize,
}

/// How many field sets' orders an envelope remembers (record kinds in use).
const RECENT_ORDERS: usize = 8;

fn given_twice(name: &str) -> AuditError {
    AuditError::new(
        ErrorKind::InvalidEvent,
        format!("envelope field {name:?} given twice"),
    )
}

impl Default for Envelope {
    fn default() -> Self {
        Envelope::new()
    }
}

impl Envelope {
    /// An empty envelope.
    pub fn new() -> Self {
        Envelope {
            buf: Vec::with_capacity(1024),
            fields: Vec::with_capacity(32),
            order: Vec::with_capacity(32),
            all_ascii: true,
            recent: Vec::new(),
            next_recent: 0,
        }
    }

    /// Empties the envelope, keeping its allocations.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.fields.clear();
        self.all_ascii = true;
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Writes `"key":` and returns where the entry starts.
    fn begin(&mut self, key: &str) -> usize {
        let start = self.buf.len();
        jcs::write_json_string(key, &mut self.buf);
        self.buf.push(b':');
        start
    }

    /// Records the field whose entry `begin` started at `start`.
    fn finish(&mut self, key: Cow<'static, str>, start: usize, value_start: usize) {
        let end = self.buf.len();
        let prefix = sort_prefix(&key);
        self.all_ascii &= key.is_ascii();
        self.fields.push(Field {
            key,
            entry: start..end,
            value_start,
            prefix,
        });
    }

    /// Adds a field whose value `write` appends to the buffer as canonical
    /// JSON text (the caller guarantees it).
    pub fn with(&mut self, key: Cow<'static, str>, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.begin(&key);
        let value_start = self.buf.len();
        write(&mut self.buf);
        self.finish(key, start, value_start);
    }

    /// Adds a string field.
    pub fn str(&mut self, key: impl Into<Cow<'static, str>>, value: &str) {
        self.with(key.into(), |buf| jcs::write_json_string(value, buf));
    }

    /// Adds a string field of ASCII text that needs no escaping (ids,
    /// times, hex digests), written by `write` between the quotes. The
    /// caller guarantees the bytes: no control character, `"` or `\\`.
    pub fn ascii_with(
        &mut self,
        key: impl Into<Cow<'static, str>>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        self.with(key.into(), |buf| {
            buf.push(b'"');
            write(buf);
            buf.push(b'"');
        });
    }

    /// Adds a field whose value is already canonical JSON text (the
    /// caller guarantees it: e.g. bytes an earlier canonicalization made).
    pub fn raw(&mut self, key: impl Into<Cow<'static, str>>, canonical: &[u8]) {
        self.with(key.into(), |buf| buf.extend_from_slice(canonical));
    }

    /// Adds an unsigned integer field (within ±(2^53−1): larger counters
    /// travel as strings, see [`crate::record::Counter`]).
    pub fn u64(&mut self, key: impl Into<Cow<'static, str>>, n: u64) {
        self.with(key.into(), |buf| {
            if n <= jcs::MAX_SAFE_INTEGER {
                let mut b = itoa_buf(n);
                buf.extend_from_slice(b.as_bytes_mut());
            } else {
                jcs::write_json_string(&n.to_string(), buf);
            }
        });
    }

    /// Adds a boolean field.
    pub fn bool(&mut self, key: impl Into<Cow<'static, str>>, b: bool) {
        self.raw(key, if b { b"true" } else { b"false" });
    }

    /// Adds a field holding `value` canonicalized.
    pub fn value(&mut self, key: impl Into<Cow<'static, str>>, value: &Value) -> Result<()> {
        let key = key.into();
        let start = self.begin(&key);
        let value_start = self.buf.len();
        if let Err(e) = jcs::canonicalize_into(value, &mut self.buf) {
            self.buf.truncate(start);
            return Err(e.into());
        }
        self.finish(key, start, value_start);
        Ok(())
    }

    /// Adds a field holding `value` serialized and canonicalized.
    pub fn ser<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<Cow<'static, str>>,
        value: &T,
    ) -> Result<()> {
        Ok(canon_ser::Fields::add(self, key.into(), value)?)
    }

    /// Adds every entry of `map` as a field.
    pub fn extend_map(&mut self, map: Map<String, Value>) -> Result<()> {
        for (k, v) in map {
            self.value(k, &v)?;
        }
        Ok(())
    }

    /// Adds the fields of a value that serializes as a JSON object (a
    /// record body), each canonicalized.
    ///
    /// Written straight as canonical text ([`crate::canon_ser`]): no
    /// `serde_json::Value` is built. On an error the fields added so far
    /// stay; the caller discards the envelope.
    pub fn extend_object<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        Ok(value.serialize(canon_ser::Members(self))?)
    }

    /// An envelope holding the entries of `map`.
    pub fn from_map(map: Map<String, Value>) -> Result<Envelope> {
        let mut e = Envelope::new();
        e.extend_map(map)?;
        Ok(e)
    }

    /// The canonical text of field `key`, if present.
    pub fn get_raw(&self, key: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.key == key)
            .and_then(|f| self.buf.get(f.value_start..f.entry.end))
    }

    /// Whether field `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.fields.iter().any(|f| f.key == key)
    }

    /// Fills `order` with the fields in RFC 8785 order; a name given twice
    /// is an error.
    fn order_fields(&mut self) -> Result<()> {
        let fields = &self.fields;
        let key = |i: usize| fields.get(i).map_or("", |f| &f.key);
        let at = |o: u128| o as u64 as usize;
        self.order.clear();
        if !self.all_ascii {
            self.order.extend((0..fields.len()).map(|i| i as u128));
            self.order.sort_unstable_by(|a, b| {
                key(at(*a)).encode_utf16().cmp(key(at(*b)).encode_utf16())
            });
            if let Some(w) = self
                .order
                .windows(2)
                .find(|w| key(at(w[0])) == key(at(w[1])))
            {
                return Err(given_twice(key(at(w[0]))));
            }
            return Ok(());
        }
        // Records of one kind add the same fields in the same order: their
        // order is remembered, keyed by the names' prefixes as added.
        if let Some((_, order)) = self.recent.iter().find(|(prefixes, _)| {
            prefixes.len() == fields.len()
                && prefixes.iter().zip(fields).all(|(p, f)| *p == f.prefix)
        }) {
            self.order.extend_from_slice(order);
            return Ok(());
        }
        // For ASCII, byte order is UTF-16 order. Sorting integers (prefix,
        // index) orders every pair whose names differ in their first eight
        // bytes; runs sharing a prefix are then sorted by the whole name,
        // and only there can a name repeat.
        self.order.extend(
            fields
                .iter()
                .enumerate()
                .map(|(i, f)| (u128::from(f.prefix) << 64) | i as u128),
        );
        self.order.sort_unstable();
        let mut distinct = true;
        let mut i = 0;
        while let Some(&first) = self.order.get(i) {
            let run = self
                .order
                .get(i..)
                .unwrap_or_default()
                .iter()
                .take_while(|&&o| o >> 64 == first >> 64)
                .count();
            if run > 1
                && let Some(r) = self.order.get_mut(i..i + run)
            {
                distinct = false;
                r.sort_unstable_by(|a, b| key(at(*a)).as_bytes().cmp(key(at(*b)).as_bytes()));
                if let Some(w) = r.windows(2).find(|w| key(at(w[0])) == key(at(w[1]))) {
                    return Err(given_twice(key(at(w[0]))));
                }
            }
            i += run.max(1);
        }
        // With distinct prefixes the order follows from them alone, so
        // the same prefixes added in the same order give the same order.
        if distinct {
            let entry = (
                fields.iter().map(|f| f.prefix).collect(),
                self.order.clone(),
            );
            if self.recent.len() < RECENT_ORDERS {
                self.recent.push(entry);
            } else if let Some(slot) = self.recent.get_mut(self.next_recent % RECENT_ORDERS) {
                *slot = entry;
            }
            self.next_recent = self.next_recent.wrapping_add(1);
        }
        Ok(())
    }

    /// Appends the envelope as one canonical JSON object to `out`. Sorts
    /// the fields; a name given twice is an error (the record would not
    /// parse back) and leaves `out` as it was.
    pub fn write_canonical(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.order_fields()?;
        let fields = &self.fields;
        // The low 64 bits of an order entry hold the field's index.
        let at = |o: u128| o as u64 as usize;
        out.reserve(self.buf.len() + fields.len() + 2);
        out.push(b'{');
        for (n, &o) in self.order.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            if let Some(f) = fields.get(at(o)) {
                out.extend_from_slice(self.buf.get(f.entry.clone()).unwrap_or_default());
            }
        }
        out.push(b'}');
        Ok(())
    }
}

impl canon_ser::Fields for Envelope {
    fn add<T: Serialize + ?Sized>(
        &mut self,
        key: Cow<'static, str>,
        value: &T,
    ) -> std::result::Result<(), canon_ser::Error> {
        let start = self.begin(&key);
        let value_start = self.buf.len();
        match canon_ser::write(value, &mut self.buf) {
            Ok(()) => {
                self.finish(key, start, value_start);
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }
}

/// Decimal digits of `n` without allocating.
struct DigitBuf {
    buf: [u8; 20],
    start: usize,
}

impl DigitBuf {
    fn as_bytes_mut(&mut self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

fn itoa_buf(mut n: u64) -> DigitBuf {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        if let Some(slot) = buf.get_mut(start) {
            // `n % 10` is one digit.
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || start == 0 {
            break;
        }
    }
    DigitBuf { buf, start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_canonicalizing_the_equivalent_map() {
        let v = json!({
            "zeta": 1, "alpha": "x\n\"y\"", "mid": {"b": [1, 2.5, null], "a": true},
            "\u{e000}": 1, "\u{1f600}": 2, "n": 9007199254740991u64, "empty": {}
        });
        let Value::Object(map) = v.clone() else {
            panic!()
        };
        let mut e = Envelope::from_map(map).unwrap();
        let mut out = Vec::new();
        e.write_canonical(&mut out).unwrap();
        assert_eq!(out, jcs::canonicalize(&v).unwrap());

        let mut e = Envelope::new();
        e.u64("seq", 0);
        e.u64("big", u64::MAX);
        e.u64("n", 1234567890);
        e.bool("ok", false);
        e.str("s", "é\u{1}");
        e.raw("r", b"[1,2]");
        let mut out = Vec::new();
        e.write_canonical(&mut out).unwrap();
        let expect = json!({"seq": 0, "big": u64::MAX.to_string(), "n": 1234567890u64,
            "ok": false, "s": "é\u{1}", "r": [1, 2]});
        assert_eq!(out, jcs::canonicalize(&expect).unwrap());
        assert_eq!(e.get_raw("n"), Some(&b"1234567890"[..]));

        // A value that cannot be canonicalized leaves no trace of its field.
        let before = out.clone();
        assert!(e.value("bad", &json!({"x": u64::MAX})).is_err());
        assert!(!e.contains("bad"));
        e.ascii_with("id", |b| b.extend_from_slice(b"01ab"));
        assert_eq!(e.get_raw("id"), Some(&b"\"01ab\""[..]));
        let mut out = Vec::new();
        e.write_canonical(&mut out).unwrap();
        let mut expect: Value = serde_json::from_slice(&before).unwrap();
        expect["id"] = json!("01ab");
        assert_eq!(out, jcs::canonicalize(&expect).unwrap());
    }

    #[test]
    fn names_sharing_their_first_eight_bytes_sort_like_the_map() {
        let names = [
            "args_hash",
            "args_has",
            "args_hashes",
            "a",
            "",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\u{0}",
            "abcdefg",
            "abcdefgi",
            "parent_span_id",
            "parent_span",
            "payload_digest",
            "Z",
            "~",
            "\u{7f}x",
        ];
        // Added in this (unsorted) order, both ways round.
        for order in [names.to_vec(), names.iter().rev().copied().collect()] {
            let mut map = Map::new();
            let mut e = Envelope::new();
            for (i, n) in order.iter().enumerate() {
                map.insert((*n).to_string(), Value::from(i));
                e.u64(*n, i as u64);
            }
            let mut out = Vec::new();
            e.write_canonical(&mut out).unwrap();
            assert_eq!(out, jcs::canonicalize(&Value::Object(map)).unwrap());
        }
    }

    #[test]
    fn a_reused_envelope_orders_every_field_set_like_the_map() {
        // Names with and without shared eight-byte prefixes, and one
        // non-ASCII name; sets drawn in varying orders, some repeated (the
        // remembered orders), some with a name twice (an error).
        let names = [
            "kind",
            "ts",
            "abcdefgh1",
            "abcdefgh2",
            "abcdefgh",
            "seq",
            "v",
            "prev",
            "\u{e9}t\u{e9}",
            "payload_digest",
            "parent_span_id",
        ];
        let mut e = Envelope::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut checked, mut refused) = (0, 0);
        for round in 0..3000 {
            // Every third round repeats a fixed set in a fixed order.
            let pick: Vec<&str> = if round % 3 == 0 {
                vec!["kind", "ts", "seq", "v", "prev", "abcdefgh1"]
            } else {
                let n = (next() % 7 + 1) as usize;
                (0..n)
                    .map(|_| names[(next() % names.len() as u64) as usize])
                    .collect()
            };
            e.clear();
            let mut map = Map::new();
            for (i, n) in pick.iter().enumerate() {
                e.u64(*n, i as u64);
                map.insert((*n).to_string(), Value::from(i));
            }
            let mut out = Vec::new();
            if map.len() < pick.len() {
                assert!(e.write_canonical(&mut out).is_err(), "{pick:?}");
                assert!(out.is_empty());
                refused += 1;
            } else {
                e.write_canonical(&mut out).unwrap();
                assert_eq!(
                    out,
                    jcs::canonicalize(&Value::Object(map)).unwrap(),
                    "{pick:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 2000 && refused > 100, "{checked} {refused}");
    }

    #[test]
    fn a_field_given_twice_is_an_error() {
        let mut e = Envelope::new();
        e.str("kind", "a");
        e.str("kind", "b");
        assert!(e.write_canonical(&mut Vec::new()).is_err());
    }
}
