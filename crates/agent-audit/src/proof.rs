//! Inclusion proofs: a self-contained bundle showing that one record is in
//! a stream whose signed checkpoint covers it, checkable offline with only
//! the bundle (and, ideally, a trusted public key).

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::chain::{envelope_hash, fmt_sha256, parse_sha256, take_unhashed};
use crate::error::{AuditError, ErrorKind, Result};
use crate::jcs::parse_strict;
use crate::keys::PublicKey;
use crate::merkle::{MerkleLog, verify_inclusion};
use crate::reader::{StreamFiles, list_streams};

/// Bundle type tag.
pub const PROOF_TYPE: &str = "agent-audit/inclusion-proof/v1";

fn proof_err(msg: impl Into<String>) -> AuditError {
    AuditError::new(ErrorKind::Proof, msg)
}

/// Builds the inclusion proof of the record with `event_id`, against the
/// stream's latest checkpoint that covers it.
pub fn prove(log: &Path, event_id: &str) -> Result<Value> {
    for dir in list_streams(log)? {
        let files = StreamFiles::read(&dir)?;
        let mut records: Vec<Map<String, Value>> = Vec::new();
        let mut found = false;
        for line in files.lines() {
            let Ok(Value::Object(m)) = parse_strict(line.bytes) else {
                continue;
            };
            if m.get("event_id").and_then(Value::as_str) == Some(event_id) {
                found = true;
            }
            records.push(m);
        }
        if !found {
            continue;
        }
        records.sort_by_key(|m| m.get("seq").and_then(Value::as_u64).unwrap_or(u64::MAX));
        let mut leaves = Vec::with_capacity(records.len());
        for (i, m) in records.iter().enumerate() {
            if m.get("seq").and_then(Value::as_u64) != Some(i as u64) {
                return Err(proof_err(format!(
                    "stream {} has a gap at seq {i}; verify the log first",
                    files.dir_name()
                )));
            }
            let h = m
                .get("hash")
                .and_then(Value::as_str)
                .and_then(parse_sha256)
                .ok_or_else(|| proof_err(format!("record seq {i} has no valid hash")))?;
            leaves.push(h);
        }
        let record = records
            .iter()
            .find(|m| m.get("event_id").and_then(Value::as_str) == Some(event_id))
            .cloned()
            .ok_or_else(|| proof_err("record vanished"))?;
        let seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let checkpoint = records
            .iter()
            .rev()
            .find(|m| {
                m.get("kind").and_then(Value::as_str) == Some("checkpoint")
                    && m.get("tree_size")
                        .and_then(Value::as_u64)
                        .is_some_and(|n| n > seq)
            })
            .cloned()
            .ok_or_else(|| {
                proof_err(format!(
                    "no checkpoint covers seq {seq} yet; flush the log first"
                ))
            })?;
        let size = checkpoint
            .get("tree_size")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let start = records
            .first()
            .filter(|m| m.get("kind").and_then(Value::as_str) == Some("stream_start"))
            .ok_or_else(|| proof_err("stream has no stream_start"))?;
        let log_tree = MerkleLog::from_leaf_data(leaves);
        let path = log_tree.inclusion_proof(seq, size)?;
        let mut record = record;
        record.remove("payload");
        return Ok(json!({
            "type": PROOF_TYPE,
            "stream_id": files.dir_name(),
            "leaf_index": seq,
            "tree_size": size,
            "record": record,
            "checkpoint": checkpoint,
            "public_key": start.get("public_key").cloned().unwrap_or(Value::Null),
            "audit_path": path.iter().map(hex::encode).collect::<Vec<_>>(),
        }));
    }
    Err(AuditError::new(
        ErrorKind::NotFound,
        format!("no record with event_id {event_id} in {}", log.display()),
    ))
}

/// What a checked proof established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofCheck {
    /// The stream.
    pub stream_id: String,
    /// The record's seq (leaf index).
    pub seq: u64,
    /// The record's hash.
    pub record_hash: String,
    /// The key that signed the checkpoint.
    pub key_id: String,
    /// Tree size of the checkpoint.
    pub tree_size: u64,
}

/// Checks a proof bundle offline: the record's hash, the checkpoint's hash
/// and signature, and the Merkle audit path. With `trusted`, the signing
/// key must be one of them.
pub fn check_proof(bundle: &Value, trusted: &[PublicKey]) -> Result<ProofCheck> {
    if bundle.get("type").and_then(Value::as_str) != Some(PROOF_TYPE) {
        return Err(proof_err(format!("not an {PROOF_TYPE} bundle")));
    }
    let mut scratch = Vec::new();
    let mut record = bundle
        .get("record")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| proof_err("bundle has no record"))?;
    let rec_unhashed = take_unhashed(&mut record);
    let rec_hash = rec_unhashed
        .claimed_hash()
        .ok_or_else(|| proof_err("record has no hash"))?;
    if envelope_hash(&Value::Object(record.clone()), &mut scratch)? != rec_hash {
        return Err(proof_err("record does not match its hash"));
    }
    let mut cp = bundle
        .get("checkpoint")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| proof_err("bundle has no checkpoint"))?;
    let cp_unhashed = take_unhashed(&mut cp);
    let cp_hash = cp_unhashed
        .claimed_hash()
        .ok_or_else(|| proof_err("checkpoint has no hash"))?;
    if envelope_hash(&Value::Object(cp.clone()), &mut scratch)? != cp_hash {
        return Err(proof_err("checkpoint does not match its hash"));
    }
    let key = PublicKey::from_hex(
        bundle
            .get("public_key")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    )?;
    if !trusted.is_empty() && !trusted.contains(&key) {
        return Err(proof_err(format!(
            "checkpoint key {} is not trusted",
            key.key_id()
        )));
    }
    let sig = cp_unhashed
        .sig_str()
        .ok_or_else(|| proof_err("checkpoint is not signed"))?;
    key.verify_hash(&cp_hash, sig)
        .map_err(|e| proof_err(format!("checkpoint signature: {e}")))?;
    let stream_id = bundle
        .get("stream_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for (what, m) in [("record", &record), ("checkpoint", &cp)] {
        if m.get("stream_id").and_then(Value::as_str) != Some(stream_id) {
            return Err(proof_err(format!("{what} is from another stream")));
        }
    }
    let seq = record
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| proof_err("record has no seq"))?;
    let size = cp
        .get("tree_size")
        .and_then(Value::as_u64)
        .ok_or_else(|| proof_err("checkpoint has no tree_size"))?;
    if bundle.get("leaf_index").and_then(Value::as_u64) != Some(seq)
        || bundle.get("tree_size").and_then(Value::as_u64) != Some(size)
    {
        return Err(proof_err(
            "bundle's leaf_index or tree_size disagree with its records",
        ));
    }
    let root = cp
        .get("root")
        .and_then(Value::as_str)
        .and_then(parse_sha256)
        .ok_or_else(|| proof_err("checkpoint has no root"))?;
    let mut path = Vec::new();
    for h in bundle
        .get("audit_path")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut d = [0u8; 32];
        hex::decode_to_slice(h.as_str().unwrap_or_default(), &mut d)
            .map_err(|_| proof_err("audit_path entry is not 64 hex"))?;
        path.push(d);
    }
    verify_inclusion(&rec_hash, seq, size, &path, &root)?;
    Ok(ProofCheck {
        stream_id: stream_id.to_string(),
        seq,
        record_hash: fmt_sha256(&rec_hash),
        key_id: key.key_id().to_string(),
        tree_size: size,
    })
}
