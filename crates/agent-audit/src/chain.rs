//! The hash chain: sealing envelopes into records and building checkpoints.
//!
//! `hash` = SHA-256 over the RFC 8785 form of the envelope without `hash`,
//! `sig` and `payload`; `prev` is the previous record's `hash` (zeros for
//! the first). Each record's hash is a leaf of the stream's RFC 6962 tree,
//! and a `checkpoint` record carries the tree head over every record
//! before it, signed. [`ChainWriter`] does no I/O, so the writer, `ingest`
//! and a collector all seal records the same way.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::envelope::Envelope;
use crate::error::{AuditError, ErrorKind, Result};
use crate::ids::{Timestamp, uuid_v7_at};
use crate::jcs;
use crate::keys::KeyPair;
use crate::merkle::CompactTree;
use crate::record::{Body, Checkpoint, Counter, SCHEMA_VERSION};

/// Fields excluded from the record hash.
pub const UNHASHED_FIELDS: [&str; 3] = ["hash", "sig", "payload"];

/// `prev` of a stream's first record.
pub const GENESIS_PREV: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Appends `sha256:<64 hex>` to `out`.
pub fn push_sha256(out: &mut Vec<u8>, h: &[u8; 32]) {
    out.extend_from_slice(b"sha256:");
    crate::ids::push_hex_bytes(out, h);
}

/// `sha256:<hex>`.
pub fn fmt_sha256(h: &[u8; 32]) -> String {
    let mut out = Vec::with_capacity(71);
    push_sha256(&mut out, h);
    // `push_sha256` writes ASCII only.
    String::from_utf8(out).unwrap_or_default()
}

/// Parses `sha256:<64 hex>`.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix("sha256:")?;
    let mut out = [0u8; 32];
    crate::ids::decode_hex(hex_part.as_bytes(), &mut out).then_some(out)
}

/// SHA-256 of the canonical form of `record` minus the unhashed fields.
/// Callers that own the record should take `hash`, `sig` and `payload` out
/// first (see [`take_unhashed`]); otherwise a stripped copy is made.
/// `scratch` is reused between calls to avoid an allocation per record.
pub fn envelope_hash(record: &Value, scratch: &mut Vec<u8>) -> Result<[u8; 32]> {
    scratch.clear();
    match record {
        Value::Object(map) if UNHASHED_FIELDS.iter().any(|f| map.contains_key(*f)) => {
            let mut copy = map.clone();
            for f in UNHASHED_FIELDS {
                copy.remove(f);
            }
            jcs::canonicalize_into(&Value::Object(copy), scratch)?;
        }
        Value::Object(_) => jcs::canonicalize_into(record, scratch)?,
        _ => {
            return Err(AuditError::new(
                ErrorKind::InvalidLog,
                "record is not a JSON object",
            ));
        }
    }
    Ok(Sha256::digest(scratch.as_slice()).into())
}

/// The fields of a record outside its hash.
#[derive(Debug, Default, Clone)]
pub struct Unhashed {
    /// `hash` as written.
    pub hash: Option<Value>,
    /// `sig` as written.
    pub sig: Option<Value>,
    /// `payload` as written.
    pub payload: Option<Value>,
}

impl Unhashed {
    /// The `hash` field parsed, when it is a well-formed `sha256:` string.
    pub fn claimed_hash(&self) -> Option<[u8; 32]> {
        self.hash
            .as_ref()
            .and_then(Value::as_str)
            .and_then(parse_sha256)
    }

    /// The `sig` field, when it is a string.
    pub fn sig_str(&self) -> Option<&str> {
        self.sig.as_ref().and_then(Value::as_str)
    }
}

/// Moves `hash`, `sig` and `payload` out of a record, leaving the envelope.
pub fn take_unhashed(map: &mut Map<String, Value>) -> Unhashed {
    Unhashed {
        hash: map.remove("hash"),
        sig: map.remove("sig"),
        payload: map.remove("payload"),
    }
}

/// Result of sealing one record.
#[derive(Clone, Debug)]
pub struct Sealed {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's hash.
    pub hash: [u8; 32],
}

/// Assigns `seq` and `prev`, computes `hash`, signs when asked, and keeps
/// the running Merkle tree of one stream.
pub struct ChainWriter {
    stream_id: String,
    key: Arc<KeyPair>,
    sign_records: bool,
    seq: u64,
    prev: [u8; 32],
    tree: CompactTree,
    since_checkpoint: u64,
    // With `defer_signatures`: per-record signatures still owed, as the
    // offset of their placeholder in the caller's buffer and the hash.
    defer: bool,
    owed: Vec<(usize, [u8; 32])>,
}

/// Fewer owed signatures than this are signed on the calling thread alone:
/// starting a second thread costs about as much as one signature.
const PARALLEL_SIGN_MIN: usize = 4;

impl ChainWriter {
    /// A chain for a new stream.
    pub fn new(stream_id: String, key: Arc<KeyPair>, sign_records: bool) -> Self {
        ChainWriter {
            stream_id,
            key,
            sign_records,
            seq: 0,
            prev: [0u8; 32],
            tree: CompactTree::new(),
            since_checkpoint: 0,
            defer: false,
            owed: Vec::new(),
        }
    }

    /// With `on`, [`ChainWriter::seal_envelope`] leaves a same-length
    /// placeholder where a per-record `sig` goes, and the caller must call
    /// [`ChainWriter::sign_owed`] on the same buffer before it uses the
    /// lines: a batch's signatures are then made on two threads at once
    /// (a signature takes longer than everything else a record costs, and
    /// the hash it signs does not depend on it). Checkpoints are always
    /// signed at once.
    pub fn defer_signatures(&mut self, on: bool) {
        self.defer = on;
    }

    /// Per-record signatures still owed (see `defer_signatures`).
    pub fn owed_signatures(&self) -> usize {
        self.owed.len()
    }

    /// Fills every owed signature into `out`, the buffer given to
    /// `seal_envelope` since the last call (not drained in between).
    pub fn sign_owed(&mut self, out: &mut [u8]) {
        if self.owed.is_empty() {
            return;
        }
        let owed = std::mem::take(&mut self.owed);
        let key = &*self.key;
        let sign_all = |part: &[(usize, [u8; 32])]| -> Vec<String> {
            let hashes: Vec<[u8; 32]> = part.iter().map(|(_, h)| *h).collect();
            key.sign_hashes(&hashes)
        };
        let (theirs, ours) = owed.split_at(owed.len() / 2);
        let sigs: Vec<String> = if owed.len() < PARALLEL_SIGN_MIN {
            sign_all(&owed)
        } else {
            std::thread::scope(|s| {
                let helper = std::thread::Builder::new()
                    .name("agent-audit-sign".into())
                    .spawn_scoped(s, || sign_all(theirs));
                let mine = sign_all(ours);
                // No thread to be had: sign the other half here too.
                let mut all = match helper.map(|h| h.join()) {
                    Ok(Ok(v)) => v,
                    _ => sign_all(theirs),
                };
                all.extend(mine);
                all
            })
        };
        for ((at, _), sig) in owed.iter().zip(&sigs) {
            if let Some(slot) = out.get_mut(*at..*at + sig.len()) {
                slot.copy_from_slice(sig.as_bytes());
            }
        }
        // Keep the allocation for the next batch.
        self.owed = owed;
        self.owed.clear();
    }

    /// The stream's id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Seq the next record will get (= records sealed so far).
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Records sealed since the last checkpoint.
    pub fn since_checkpoint(&self) -> u64 {
        self.since_checkpoint
    }

    /// Seals `envelope` (which must not hold `v`, `stream_id`, `seq`,
    /// `prev`, `hash`, `sig` or `payload`) and appends the JSON line to `out`.
    /// `payload` (JSON text of an object) is stored after the envelope,
    /// outside the hash.
    pub fn seal(
        &mut self,
        envelope: Map<String, Value>,
        payload: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<Sealed> {
        let mut env = Envelope::from_map(envelope)?;
        self.seal_envelope(&mut env, payload, out)
    }

    /// [`ChainWriter::seal`] for an envelope already held as canonical
    /// fields (the writer's path: no `Map` per record).
    pub fn seal_envelope(
        &mut self,
        envelope: &mut Envelope,
        payload: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<Sealed> {
        // A field the chain sets, given again, fails in write_canonical
        // ("given twice"): the record is refused rather than overwritten.
        let is_checkpoint = envelope.get_raw("kind") == Some(&b"\"checkpoint\""[..]);
        envelope.u64("v", SCHEMA_VERSION);
        envelope.str("stream_id", &self.stream_id);
        envelope.u64("seq", self.seq);
        let prev = self.prev;
        envelope.ascii_with("prev", |b| push_sha256(b, &prev));
        // The line is the canonical envelope with hash, sig and payload
        // appended: one canonicalization per record, written in place.
        let start = out.len();
        envelope.write_canonical(out)?;
        let hash: [u8; 32] = Sha256::digest(out.get(start..).unwrap_or_default()).into();
        if out.pop() != Some(b'}') {
            out.truncate(start);
            return Err(AuditError::new(
                ErrorKind::InvalidEvent,
                "envelope is not an object",
            ));
        }
        out.extend_from_slice(b",\"hash\":\"");
        push_sha256(out, &hash);
        out.push(b'"');
        if is_checkpoint || (self.sign_records && !self.defer) {
            out.extend_from_slice(b",\"sig\":\"");
            out.extend_from_slice(self.key.sign_hash(&hash).as_bytes());
            out.push(b'"');
        } else if self.sign_records {
            out.extend_from_slice(b",\"sig\":\"");
            self.owed.push((out.len(), hash));
            out.resize(out.len() + self.key.signature_len(), b'0');
            out.push(b'"');
        }
        if let Some(p) = payload {
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"}\n");

        let sealed = Sealed {
            seq: self.seq,
            hash,
        };
        self.tree.push(&hash);
        self.prev = hash;
        self.seq += 1;
        self.since_checkpoint = if is_checkpoint {
            0
        } else {
            self.since_checkpoint + 1
        };
        Ok(sealed)
    }

    /// Appends a signed checkpoint over every record so far.
    pub fn checkpoint(&mut self, ts: Timestamp, out: &mut Vec<u8>) -> Result<Sealed> {
        let body = Body::Checkpoint(Checkpoint {
            tree_size: Counter(self.tree.size()),
            root: fmt_sha256(&self.tree.root()),
            key_id: self.key.key_id().to_string(),
        });
        let mut envelope = Envelope::from_map(writer_envelope(&body, ts)?)?;
        self.seal_envelope(&mut envelope, None, out)
    }
}

/// Envelope of a record the writer itself produces (no trace, no principal).
pub fn writer_envelope(body: &Body, ts: Timestamp) -> Result<Map<String, Value>> {
    let Value::Object(mut map) = serde_json::to_value(body).map_err(json_err)? else {
        return Err(AuditError::invalid_event("record body is not an object"));
    };
    map.insert("event_id".into(), Value::String(uuid_v7_at(ts).to_string()));
    map.insert("ts".into(), Value::String(ts.to_rfc3339()));
    Ok(map)
}

pub(crate) fn json_err(e: serde_json::Error) -> AuditError {
    AuditError::new(ErrorKind::InvalidEvent, format!("cannot serialize: {e}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jcs::parse_strict;

    #[test]
    fn sealed_line_rehashes_and_links() {
        let key = Arc::new(KeyPair::generate().unwrap());
        let mut chain = ChainWriter::new("s1".into(), key.clone(), false);
        let mut out = Vec::new();
        let mut env = Map::new();
        env.insert("kind".into(), "decision".into());
        env.insert("decision".into(), "go".into());
        let payload = serde_json::json!({"salt": "00", "data": {"reasoning": "x"}});
        let payload = serde_json::to_vec(&payload).unwrap();
        let a = chain.seal(env.clone(), Some(&payload), &mut out).unwrap();
        let b = chain.seal(env, None, &mut out).unwrap();
        let c = chain.checkpoint(Timestamp::now(), &mut out).unwrap();
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3);
        let recs: Vec<Map<String, Value>> = lines
            .iter()
            .map(|l| match parse_strict(l).unwrap() {
                Value::Object(m) => m,
                _ => panic!(),
            })
            .collect();
        let mut scratch = Vec::new();
        for (rec, sealed) in recs.iter().zip([&a, &b, &c]) {
            let v = Value::Object(rec.clone());
            assert_eq!(envelope_hash(&v, &mut scratch).unwrap(), sealed.hash);
            assert_eq!(rec["hash"], fmt_sha256(&sealed.hash));
        }
        assert_eq!(recs[0]["prev"], GENESIS_PREV);
        assert_eq!(recs[1]["prev"], recs[0]["hash"]);
        assert_eq!(recs[2]["tree_size"], 2);
        let sig = recs[2]["sig"].as_str().unwrap();
        key.public().verify_hash(&c.hash, sig).unwrap();
        assert!(recs[1].get("sig").is_none());
        assert_eq!(chain.since_checkpoint(), 0);
    }

    /// Seals `n` records (each with a payload) and a checkpoint with `defer` as given, then signs what is owed.
    fn sealed_lines(key: &Arc<KeyPair>, defer: bool, n: usize) -> Vec<u8> {
        let mut chain = ChainWriter::new("s1".into(), key.clone(), true);
        chain.defer_signatures(defer);
        let ts = Timestamp::from_unix_millis(1_700_000_000_000);
        let mut out = Vec::new();
        for i in 0..n {
            let mut env = Map::new();
            env.insert("kind".into(), "decision".into());
            env.insert("decision".into(), format!("step {i}").into());
            let payload = format!("{{\"data\":{{\"i\":{i}}}}}");
            chain.seal(env, Some(payload.as_bytes()), &mut out).unwrap();
            if i + 1 == n {
                chain.checkpoint(ts, &mut out).unwrap();
            }
        }
        assert_eq!(chain.owed_signatures(), if defer { n } else { 0 });
        chain.sign_owed(&mut out);
        assert_eq!(chain.owed_signatures(), 0);
        out
    }

    #[test]
    fn deferred_signatures_fill_in_the_same_bytes() {
        let key = Arc::new(KeyPair::generate().unwrap());
        assert_eq!(key.signature_len(), key.sign_hash(&[1; 32]).len());
        // Ed25519 signatures are deterministic: signing later, on two
        // threads, must give the very lines signing at once gives, for a
        // batch signed on one thread (below PARALLEL_SIGN_MIN) and on two.
        for n in [1, PARALLEL_SIGN_MIN - 1, PARALLEL_SIGN_MIN, 37] {
            let now = sealed_lines(&key, false, n);
            let later = sealed_lines(&key, true, n);
            // (A checkpoint's event_id is random, hence last: compare the
            // records before it.)
            let records = |out: &[u8]| -> Vec<String> {
                String::from_utf8(out.to_vec())
                    .unwrap()
                    .lines()
                    .filter(|l| !l.contains("\"kind\":\"checkpoint\""))
                    .map(String::from)
                    .collect()
            };
            assert_eq!(records(&later), records(&now));
            assert_eq!(records(&now).len(), n);
            // And every record's signature checks out.
            for line in later.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let Value::Object(rec) = parse_strict(line).unwrap() else {
                    panic!()
                };
                let hash = parse_sha256(rec["hash"].as_str().unwrap()).unwrap();
                key.public()
                    .verify_hash(&hash, rec["sig"].as_str().unwrap())
                    .unwrap();
            }
        }
    }
}
