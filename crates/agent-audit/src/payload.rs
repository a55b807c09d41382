//! Payload handling on the background thread: normalising values so they
//! canonicalize, hashing the unredacted parts (`args_hash` ...), truncating
//! huge values, salting and digesting what is stored.
//!
//! Order matters: normalise, hash the full value, redact, truncate, store.
//! So `args_hash` always covers the whole value even when the stored copy
//! is redacted or cut short.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::jcs::{self, MAX_SAFE_INTEGER};

/// Bounds applied to stored payloads.
#[derive(Clone, Debug)]
pub struct PayloadLimits {
    /// Strings longer than this (bytes) are stored truncated.
    pub max_string_bytes: usize,
    /// Deeper values are replaced by a marker (hashed and stored alike).
    pub max_depth: usize,
}

impl Default for PayloadLimits {
    fn default() -> Self {
        PayloadLimits {
            max_string_bytes: 64 * 1024,
            max_depth: 64,
        }
    }
}

/// Makes a value canonicalizable: integers beyond ±(2^53−1) become
/// decimal strings, nesting beyond `max_depth` becomes
/// `{"$truncated":{"reason":"depth"}}`. Returns whether anything changed.
pub fn normalize(v: &mut Value, max_depth: usize) -> bool {
    normalize_at(v, 0, max_depth)
}

fn normalize_at(v: &mut Value, depth: usize, max_depth: usize) -> bool {
    match v {
        Value::Number(n) => {
            let unsafe_int = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => i.unsigned_abs() > MAX_SAFE_INTEGER,
                (None, Some(u)) => u > MAX_SAFE_INTEGER,
                _ => false,
            };
            if unsafe_int {
                *v = Value::String(n.to_string());
            }
            unsafe_int
        }
        Value::Array(_) | Value::Object(_) if depth >= max_depth => {
            *v = depth_marker();
            true
        }
        Value::Array(a) => {
            let mut changed = false;
            for x in a {
                changed |= normalize_at(x, depth + 1, max_depth);
            }
            changed
        }
        Value::Object(o) => {
            let mut changed = false;
            for x in o.values_mut() {
                changed |= normalize_at(x, depth + 1, max_depth);
            }
            changed
        }
        _ => false,
    }
}

fn depth_marker() -> Value {
    marker::truncated("depth", None)
}

/// The `$`-markers that stand in a payload for what JSON cannot hold or
/// what was cut. The bindings build them from their own languages'
/// values; defining them once keeps Python, Node and the core alike.
pub mod marker {
    use serde_json::{Map, Number, Value};

    /// `{key: inner}`.
    pub fn marker(key: &str, inner: Value) -> Value {
        let mut m = Map::with_capacity(1);
        m.insert(key.to_string(), inner);
        Value::Object(m)
    }

    /// `{"reason": …, "len": …}`, the body of a `$truncated` marker.
    pub fn truncated_body(reason: &str, len: Option<u64>) -> Value {
        let mut inner = Map::with_capacity(2);
        inner.insert("reason".into(), Value::String(reason.into()));
        if let Some(n) = len {
            inner.insert("len".into(), Value::from(n));
        }
        Value::Object(inner)
    }

    /// `{"$truncated": {"reason": …[, "len": N]}}`.
    pub fn truncated(reason: &str, len: Option<u64>) -> Value {
        marker("$truncated", truncated_body(reason, len))
    }

    /// `{"$cycle": true}`: a container met again inside itself.
    pub fn cycle() -> Value {
        marker("$cycle", Value::Bool(true))
    }

    /// A float as JSON: finite numbers as numbers, NaN and ±infinity as
    /// `{"$float": "NaN" | "Infinity" | "-Infinity"}`.
    pub fn float(x: f64) -> Value {
        match Number::from_f64(x) {
            Some(n) => Value::Number(n),
            None => {
                let name = if x.is_nan() {
                    "NaN"
                } else if x > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                marker("$float", Value::String(name.into()))
            }
        }
    }
}

/// Replaces strings longer than `max` bytes by
/// `{"$truncated":{"reason":"size","bytes":N,"sha256":"…","head":"…"}}`.
/// Returns whether anything was cut.
pub fn truncate_strings(v: &mut Value, max: usize) -> bool {
    match v {
        Value::String(s) if s.len() > max => {
            let mut cut = max.min(1024);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let Value::Object(mut inner) = marker::truncated_body("size", None) else {
                return false;
            };
            inner.insert("bytes".into(), Value::from(s.len() as u64));
            inner.insert(
                "sha256".into(),
                Value::String(hex::encode(Sha256::digest(s.as_bytes()))),
            );
            inner.insert("head".into(), Value::String(s[..cut].to_string()));
            *v = marker::marker("$truncated", Value::Object(inner));
            true
        }
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |acc, x| truncate_strings(x, max) | acc),
        Value::Object(o) => o
            .values_mut()
            .fold(false, |acc, x| truncate_strings(x, max) | acc),
        _ => false,
    }
}

/// Hashes canonical values: plain SHA-256, or HMAC-SHA256 under the
/// tenant hashing key (a plain hash of an e-mail address is still
/// personal data).
#[derive(Clone)]
pub struct ValueHasher {
    key: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for ValueHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValueHasher(keyed: {})", self.key.is_some())
    }
}

impl ValueHasher {
    /// A hasher, keyed when `key` is given.
    pub fn new(key: Option<&[u8]>) -> Self {
        ValueHasher {
            key: key.and_then(|k| Hmac::<Sha256>::new_from_slice(k).ok()),
        }
    }

    /// Whether an HMAC key is in use.
    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    /// `sha256:…` or `hmac-sha256:…` of raw bytes.
    pub fn hash_bytes(&self, bytes: &[u8]) -> String {
        let mut out = Vec::with_capacity(76);
        self.push_hash(bytes, &mut out);
        // `push_hash` writes ASCII only.
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`ValueHasher::hash_bytes`] appended to `out` (ASCII, nothing to escape).
    pub fn push_hash(&self, bytes: &[u8], out: &mut Vec<u8>) {
        match &self.key {
            Some(k) => {
                let mut mac = k.clone();
                mac.update(bytes);
                out.extend_from_slice(b"hmac-sha256:");
                crate::ids::push_hex_bytes(out, &mac.finalize().into_bytes());
            }
            None => {
                out.extend_from_slice(b"sha256:");
                crate::ids::push_hex_bytes(out, &Sha256::digest(bytes));
            }
        }
    }

    /// Hash of the canonical form of `v`.
    pub fn hash_value(&self, v: &Value, scratch: &mut Vec<u8>) -> Result<String> {
        scratch.clear();
        jcs::canonicalize_into(v, scratch)?;
        Ok(self.hash_bytes(scratch))
    }
}

/// Random salts, drawn from the OS in blocks to keep syscalls off the
/// per-record path.
#[derive(Default)]
pub struct SaltSource {
    buf: Vec<u8>,
    pos: usize,
}

impl SaltSource {
    /// The next 32-byte salt.
    pub fn next_salt(&mut self) -> [u8; 32] {
        if self.pos + 32 > self.buf.len() {
            // One syscall per 1024 salts; the buffer is reused.
            self.buf.resize(32 * 1024, 0);
            if getrandom::fill(&mut self.buf).is_err() {
                // Without OS randomness, derive from the clock; salts still
                // differ, though they are guessable: better than no record.
                let seed = crate::ids::Timestamp::now().0.to_le_bytes();
                for (i, chunk) in self.buf.chunks_mut(32).enumerate() {
                    let d = Sha256::new()
                        .chain_update(seed)
                        .chain_update(i.to_le_bytes())
                        .finalize();
                    chunk.copy_from_slice(&d);
                }
            }
            self.pos = 0;
        }
        let mut salt = [0u8; 32];
        if let Some(s) = self.buf.get(self.pos..self.pos + 32) {
            salt.copy_from_slice(s);
        }
        self.pos += 32;
        salt
    }
}

/// `payload_digest` = sha256(salt ‖ canonical(data)), in `sha256:` form.
pub fn payload_digest(salt: &[u8], data: &Value, scratch: &mut Vec<u8>) -> Result<String> {
    scratch.clear();
    jcs::canonicalize_into(data, scratch)?;
    let d: [u8; 32] = Sha256::new()
        .chain_update(salt)
        .chain_update(scratch.as_slice())
        .finalize()
        .into();
    Ok(crate::chain::fmt_sha256(&d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_turns_big_ints_into_strings_and_caps_depth() {
        let mut v = json!({"a": u64::MAX, "b": -9007199254740993i64, "c": 5});
        assert!(normalize(&mut v, 64));
        assert_eq!(
            v,
            json!({"a": "18446744073709551615", "b": "-9007199254740993", "c": 5})
        );
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert!(normalize(&mut deep, 10));
        assert!(jcs::canonicalize(&deep).is_ok());
        assert!(serde_json::to_string(&deep).unwrap().contains("$truncated"));
    }

    /// The writer canonicalizes within the depth limit first and normalizes
    /// only when that fails: it must fail exactly when `normalize` would
    /// change the value.
    #[test]
    fn canonicalizing_within_the_limit_fails_exactly_when_normalize_changes() {
        let nested = |depth: usize, object: bool, leaf: Value| {
            (0..depth).fold(leaf, |v, _| {
                if object {
                    json!({"k": v, "s": "x"})
                } else {
                    json!([1, v])
                }
            })
        };
        let leaves = [
            json!(1),
            json!([]),
            json!({}),
            json!(u64::MAX),
            json!(-9007199254740992i64),
            json!(9007199254740991u64),
        ];
        for max_depth in [0, 1, 2, 63, 64, 65, 127, 128, 200] {
            for depth in (0..4).chain(62..67).chain(125..130) {
                for object in [false, true] {
                    for leaf in &leaves {
                        let v = nested(depth, object, leaf.clone());
                        let mut out = b"kept".to_vec();
                        let within = jcs::canonicalize_within(&v, &mut out, max_depth);
                        let changes = normalize(&mut v.clone(), max_depth);
                        let plain = jcs::canonicalize(&v);
                        match &within {
                            Ok(()) => {
                                assert!(!changes, "{max_depth} {depth} {leaf}");
                                assert_eq!(out[4..], plain.unwrap()[..]);
                            }
                            // Beyond the canonicalizer's own limit both fail.
                            Err(_) => {
                                assert!(changes || plain.is_err(), "{max_depth} {depth} {leaf}")
                            }
                        }
                        if within.is_err() {
                            assert_eq!(out, b"kept");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_keeps_size_and_hash() {
        let big = "é".repeat(100_000);
        let mut v = json!({"blob": big.clone()});
        assert!(truncate_strings(&mut v, 1000));
        let t = &v["blob"]["$truncated"];
        assert_eq!(t["bytes"], big.len());
        assert_eq!(t["sha256"], hex::encode(Sha256::digest(big.as_bytes())));
        assert!(t["head"].as_str().unwrap().len() <= 1000);
    }

    #[test]
    fn keyed_and_plain_hashes_differ_and_salts_do_too() {
        let mut s = Vec::new();
        let v = json!({"email": "a@b.c"});
        let plain = ValueHasher::new(None).hash_value(&v, &mut s).unwrap();
        let keyed = ValueHasher::new(Some(b"k")).hash_value(&v, &mut s).unwrap();
        assert!(plain.starts_with("sha256:"));
        assert!(keyed.starts_with("hmac-sha256:"));
        let mut salts = SaltSource::default();
        let a = salts.next_salt();
        let b = salts.next_salt();
        assert_ne!(a, b);
        let d1 = payload_digest(&a, &v, &mut s).unwrap();
        let d2 = payload_digest(&b, &v, &mut s).unwrap();
        assert_ne!(d1, d2);
    }
}
