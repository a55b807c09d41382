//! Witness co-signatures: a second key vouching that it saw a checkpoint.
//!
//! A writer's own signatures cannot catch one attack: cutting the tail of
//! a stream back to an earlier checkpoint and putting that checkpoint in
//! `head.json`. Everything left is validly signed. A witness (the central
//! collector) that accepted a later checkpoint co-signs it with a key of
//! its own; verifying the host's log against those co-signatures then
//! finds the cut (`cut_tail`) or a rewritten record (`witness_mismatch`).
//!
//! A co-signature is one JSON line in `witness.jsonl`:
//!
//! ```json
//! {"checkpoint_hash":"sha256:…","kind":"witness_cosignature","root":"sha256:…",
//!  "seq":41,"stream_id":"…","tree_size":41,"ts":"…","v":1,
//!  "witness_key_id":"…","hash":"sha256:…","sig":"…"}
//! ```
//!
//! `hash` is SHA-256 over the RFC 8785 form of the line without `hash` and
//! `sig`, and `sig` the witness's Ed25519 signature of that hash, as for
//! records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::{envelope_hash, fmt_sha256, parse_sha256, take_unhashed};
use crate::error::{AuditError, ErrorKind, Result};
use crate::ids::Timestamp;
use crate::jcs;
use crate::keys::{KeyPair, PublicKey};

/// File name of a stream's co-signatures (next to its segments in the
/// central log).
pub const WITNESS_FILE: &str = "witness.jsonl";

/// `kind` of a co-signature line.
pub const COSIGNATURE_KIND: &str = "witness_cosignature";

/// One verified co-signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    /// The stream the checkpoint belongs to.
    pub stream_id: String,
    /// The checkpoint record's seq.
    pub seq: u64,
    /// The checkpoint's `tree_size`.
    pub tree_size: u64,
    /// The checkpoint's Merkle `root`.
    pub root: String,
    /// The checkpoint record's `hash`.
    pub checkpoint_hash: String,
    /// Key id of the witness that signed.
    pub witness_key_id: String,
    /// When the witness signed.
    pub ts: String,
}

#[derive(Deserialize)]
struct CheckpointFields {
    kind: String,
    stream_id: String,
    seq: u64,
    tree_size: u64,
    root: String,
    hash: String,
}

/// Co-signs one checkpoint record line (as written by the writer, without
/// its newline) and returns the co-signature line, without newline. The
/// caller has verified the checkpoint; this only reads its fields.
pub fn cosign(key: &KeyPair, checkpoint_line: &[u8], ts: Timestamp) -> Result<Vec<u8>> {
    let c: CheckpointFields = serde_json::from_slice(checkpoint_line).map_err(|e| {
        AuditError::new(
            ErrorKind::InvalidEvent,
            format!("not a checkpoint record: {e}"),
        )
    })?;
    if c.kind != "checkpoint" {
        return Err(AuditError::new(
            ErrorKind::InvalidEvent,
            format!("not a checkpoint record: kind {:?}", c.kind),
        ));
    }
    let body = serde_json::json!({
        "v": 1,
        "kind": COSIGNATURE_KIND,
        "stream_id": c.stream_id,
        "seq": c.seq,
        "tree_size": c.tree_size,
        "root": c.root,
        "checkpoint_hash": c.hash,
        "witness_key_id": key.key_id(),
        "ts": ts.to_rfc3339(),
    });
    let mut canon = jcs::canonicalize(&body)?;
    let hash: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&canon).into()
    };
    canon.pop();
    canon.extend_from_slice(b",\"hash\":\"");
    canon.extend_from_slice(fmt_sha256(&hash).as_bytes());
    canon.extend_from_slice(b"\",\"sig\":\"");
    canon.extend_from_slice(key.sign_hash(&hash).as_bytes());
    canon.extend_from_slice(b"\"}");
    Ok(canon)
}

/// Parses one co-signature line and checks its hash and its signature by
/// one of `witness_keys`.
pub fn parse_cosignature(line: &[u8], witness_keys: &[PublicKey]) -> Result<Cosignature> {
    let bad = |why: String| AuditError::new(ErrorKind::InvalidLog, why);
    let Value::Object(mut map) =
        jcs::parse_strict(line).map_err(|e| bad(format!("not JSON: {e}")))?
    else {
        return Err(bad("not a JSON object".into()));
    };
    let unhashed = take_unhashed(&mut map);
    let claimed = unhashed
        .claimed_hash()
        .ok_or_else(|| bad("no hash".into()))?;
    let mut scratch = Vec::new();
    if envelope_hash(&Value::Object(map.clone()), &mut scratch)? != claimed {
        return Err(bad("its hash does not match its content".into()));
    }
    let sig = unhashed.sig_str().ok_or_else(|| bad("no sig".into()))?;
    let key_id = map
        .get("witness_key_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = witness_keys
        .iter()
        .find(|k| k.key_id() == key_id)
        .ok_or_else(|| bad(format!("signed by witness key {key_id:?}, not a given one")))?;
    key.verify_hash(&claimed, sig)
        .map_err(|e| bad(format!("signature does not verify: {e}")))?;
    if map.get("kind").and_then(Value::as_str) != Some(COSIGNATURE_KIND) {
        return Err(bad(format!("kind is not {COSIGNATURE_KIND}")));
    }
    let c: Cosignature =
        serde_json::from_value(Value::Object(map)).map_err(|e| bad(format!("fields: {e}")))?;
    if parse_sha256(&c.checkpoint_hash).is_none() {
        return Err(bad("checkpoint_hash is not a sha256: value".into()));
    }
    Ok(c)
}

/// Verified co-signatures by stream id.
#[derive(Clone, Debug, Default)]
pub struct WitnessSet {
    by_stream: HashMap<String, Vec<Cosignature>>,
    /// Co-signatures loaded.
    pub count: u64,
    /// Files read.
    pub files: Vec<PathBuf>,
}

impl WitnessSet {
    /// Loads every `witness.jsonl` under `path` (a file, or a directory
    /// searched recursively, e.g. a whole central log). Every line must be
    /// a co-signature signed by one of `witness_keys`: a witness that does
    /// not verify is an error, not evidence.
    pub fn load(path: &Path, witness_keys: &[PublicKey]) -> Result<WitnessSet> {
        if witness_keys.is_empty() {
            return Err(AuditError::config(
                "checking against a witness needs the witness's public key",
            ));
        }
        let mut files = Vec::new();
        find_witness_files(path, &mut files)?;
        if files.is_empty() {
            return Err(AuditError::new(
                ErrorKind::InvalidLog,
                format!("no {WITNESS_FILE} found in {}", path.display()),
            ));
        }
        let mut set = WitnessSet::default();
        for f in &files {
            let text = std::fs::read(f)
                .map_err(|e| AuditError::io(format!("cannot read {}", f.display()), e))?;
            for (i, line) in text.split(|b| *b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                let c = parse_cosignature(line, witness_keys).map_err(|e| {
                    AuditError::new(
                        ErrorKind::InvalidLog,
                        format!("{}:{}: {}", f.display(), i + 1, e.message()),
                    )
                })?;
                set.add(c);
            }
        }
        set.files = files;
        Ok(set)
    }

    /// Adds a verified co-signature.
    pub fn add(&mut self, c: Cosignature) {
        self.count += 1;
        self.by_stream
            .entry(c.stream_id.clone())
            .or_default()
            .push(c);
    }

    /// The co-signatures of one stream.
    pub fn for_stream(&self, stream_id: &str) -> &[Cosignature] {
        self.by_stream
            .get(stream_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

fn find_witness_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| AuditError::io(format!("cannot open {}", path.display()), e))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| AuditError::io(format!("cannot list {}", path.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            find_witness_files(&p, out)?;
        } else if p.file_name().and_then(|n| n.to_str()) == Some(WITNESS_FILE) {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosignature_round_trips_and_rejects_other_keys_and_edits() {
        let writer = KeyPair::generate().unwrap();
        let witness = KeyPair::generate().unwrap();
        let mut chain = crate::chain::ChainWriter::new("s1".into(), writer.into(), false);
        let mut out = Vec::new();
        chain.checkpoint(Timestamp::now(), &mut out).unwrap();
        let line = out.strip_suffix(b"\n").unwrap();
        let co = cosign(&witness, line, Timestamp::now()).unwrap();
        let c = parse_cosignature(&co, &[witness.public()]).unwrap();
        assert_eq!((c.stream_id.as_str(), c.seq, c.tree_size), ("s1", 0, 0));
        let other = KeyPair::generate().unwrap();
        assert!(parse_cosignature(&co, &[other.public()]).is_err());
        let edited = String::from_utf8(co.clone())
            .unwrap()
            .replace("\"seq\":0", "\"seq\":5");
        assert!(parse_cosignature(edited.as_bytes(), &[witness.public()]).is_err());
        assert!(cosign(&witness, br#"{"kind":"tool_call"}"#, Timestamp::now()).is_err());
    }
}
