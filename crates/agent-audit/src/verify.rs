//! The verifier: recomputes every record's hash, follows the chain, checks
//! every checkpoint's Merkle root and signature, compares the stream with
//! its `head.json`, and names each finding with stream, seq, file and
//! byte offset.
//!
//! Severity decides the exit code of `agent-audit verify`: any
//! [`Severity::Tampered`] finding gives 1. A torn last line (a crash), an
//! open stream and an erased payload are reported but are not tampering.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chain::{GENESIS_PREV, envelope_hash, parse_sha256, take_unhashed};
use crate::error::Result;
use crate::jcs::parse_strict;
use crate::keys::{PublicKey, SigError};
use crate::merkle::CompactTree;
use crate::payload::payload_digest;
use crate::reader::{Line, StreamFiles, list_streams};
use crate::record::SCHEMA_VERSION;
use crate::witness::{Cosignature, WitnessSet};
use crate::writer::HEAD_FILE;

mod scan;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Expected in a healthy log (an erased payload).
    Info,
    /// Not tampering, but not a clean close (a crash, a live writer).
    Warning,
    /// The log was altered.
    Tampered,
}

/// What was found. The string form is stable (JSON output, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingCode {
    /// A record's content no longer matches its hash (a changed byte).
    HashMismatch,
    /// A stored payload no longer matches its `payload_digest`.
    PayloadMismatch,
    /// A line is not a valid record (not JSON, duplicate keys, missing fields).
    MalformedRecord,
    /// Records are missing from the sequence (deleted).
    MissingRecords,
    /// The same record appears twice.
    DuplicateRecord,
    /// A different record with an already used seq (inserted).
    ConflictingRecord,
    /// Records appear out of order.
    Reordered,
    /// `prev` does not match the previous record's hash (forged or inserted).
    ChainBreak,
    /// A checkpoint's tree size or Merkle root does not match the records.
    CheckpointMismatch,
    /// A signature does not verify.
    BadSignature,
    /// A signature by a key that is not the stream's or not trusted.
    UnknownKey,
    /// A checkpoint without a signature.
    MissingSignature,
    /// The stream does not begin with a valid `stream_start`.
    BadStreamStart,
    /// A record claims another stream or schema version.
    WrongStream,
    /// Records covered by the signed head are gone (tail cut).
    CutTail,
    /// The signed head does not match the log.
    HeadMismatch,
    /// A record a witness co-signed differs from the log's record at that seq.
    WitnessMismatch,
    /// The last line is incomplete (the writer was killed mid-write).
    TornTail,
    /// The stream has no `stream_end` (writer still running, or crashed).
    OpenStream,
    /// Records after the last checkpoint are not covered by a signature.
    UnsignedTail,
    /// A payload was erased; the envelope still verifies.
    ErasedPayload,
}

impl FindingCode {
    /// Severity of this kind of finding.
    pub fn severity(self) -> Severity {
        match self {
            FindingCode::TornTail | FindingCode::OpenStream | FindingCode::UnsignedTail => {
                Severity::Warning
            }
            FindingCode::ErasedPayload => Severity::Info,
            _ => Severity::Tampered,
        }
    }
}

/// One finding, located as precisely as possible.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// What.
    pub code: FindingCode,
    /// How bad.
    pub severity: Severity,
    /// Which stream.
    pub stream_id: String,
    /// Which record, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Which file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Byte offset of the line in that file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Human-readable detail.
    pub message: String,
}

/// The state a stream was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    /// Closed with `stream_end`, fully signed, nothing wrong.
    Clean,
    /// No `stream_end`; the records present verify.
    Open,
    /// A torn last line: the writer died mid-write; the rest verifies.
    Truncated,
    /// Altered.
    Tampered,
}

/// Summary of one stream.
#[derive(Clone, Debug, Serialize)]
pub struct StreamReport {
    /// Stream id.
    pub stream_id: String,
    /// Records that parsed.
    pub records: u64,
    /// Checkpoints that verified.
    pub checkpoints_verified: u64,
    /// Signing key id from `stream_start`.
    pub key_id: Option<String>,
    /// Payloads erased.
    pub erased_payloads: u64,
    /// Outcome.
    pub status: StreamStatus,
}

/// Everything the verifier found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Per-stream summaries.
    pub streams: Vec<StreamReport>,
    /// Findings in stream and file order.
    pub findings: Vec<Finding>,
    /// Records checked in all.
    pub records: u64,
}

impl VerifyReport {
    /// Whether any finding is tampering.
    pub fn is_tampered(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Tampered)
    }

    /// 0 clean (warnings allowed), 1 tampered.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.is_tampered())
    }

    /// Findings with a given code.
    pub fn with_code(&self, code: FindingCode) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.code == code).collect()
    }
}

/// Verifier settings.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// When non-empty, every stream's key must be one of these.
    pub trusted_keys: Vec<PublicKey>,
}

/// Verifies every stream of a log directory (or one stream directory).
/// `Err` only when the input cannot be used at all (exit 2).
pub fn verify_log(path: &Path, opts: &VerifyOptions) -> Result<VerifyReport> {
    verify_log_witnessed(path, opts, None)
}

/// [`verify_log`], and also checks every stream against the checkpoints a
/// witness co-signed ([`crate::witness`]): a co-signed checkpoint missing
/// from the log is a cut tail, a different record at its seq a
/// `witness_mismatch`. Streams the witness never saw are checked as usual.
pub fn verify_log_witnessed(
    path: &Path,
    opts: &VerifyOptions,
    witness: Option<&WitnessSet>,
) -> Result<VerifyReport> {
    let streams = list_streams(path)?;
    if streams.is_empty() {
        return Err(crate::error::AuditError::new(
            crate::error::ErrorKind::InvalidLog,
            format!("no audit streams found in {}", path.display()),
        ));
    }
    let mut report = VerifyReport {
        streams: Vec::new(),
        findings: Vec::new(),
        records: 0,
    };
    for dir in streams {
        let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let cosigned = witness.map_or(&[][..], |w| w.for_stream(id));
        let (summary, findings) = verify_stream_dir(&dir, opts, cosigned)?;
        report.records += summary.records;
        report.streams.push(summary);
        report.findings.extend(findings);
    }
    Ok(report)
}

/// What the verifier keeps of each record: small, so a long stream fits.
struct Rec {
    seq: u64,
    hash: [u8; 32],
    /// The Merkle leaf hash of `hash`, computed with the per-line checks.
    leaf: [u8; 32],
    prev: Option<[u8; 32]>,
    segment: usize,
    offset: u64,
    kind: RecKind,
    /// A checkpoint's tree size and root.
    checkpoint: Option<Box<(u64, String)>>,
    sig: Option<String>,
    stream_start_key: Option<String>,
}

/// A record's kind as the checks compare it: one of the schema's without
/// an allocation per record, or whatever else the line says.
#[derive(Debug, Clone, PartialEq)]
enum RecKind {
    Known(crate::record::Kind),
    Other(Box<str>),
}

impl RecKind {
    fn of(s: &str) -> RecKind {
        crate::record::Kind::parse(s).map_or_else(|| RecKind::Other(s.into()), RecKind::Known)
    }

    fn as_str(&self) -> &str {
        match self {
            RecKind::Known(k) => k.as_str(),
            RecKind::Other(s) => s,
        }
    }
}

impl PartialEq<&str> for RecKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for RecKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

struct Ctx<'a> {
    segments: &'a [PathBuf],
    hash_key: memchr::memmem::Finder<'static>,
    stream_id: String,
    findings: Vec<Finding>,
}

impl Ctx<'_> {
    fn add(
        &mut self,
        code: FindingCode,
        seq: Option<u64>,
        at: Option<(usize, u64)>,
        message: String,
    ) {
        self.findings.push(Finding {
            code,
            severity: code.severity(),
            stream_id: self.stream_id.clone(),
            seq,
            file: at.and_then(|(s, _)| self.segments.get(s).cloned()),
            offset: at.map(|(_, o)| o),
            message,
        });
    }
}

const HASH_KEY: &[u8] = b",\"hash\":\"sha256:";

/// The common case, without re-canonicalizing: the writer lays a record
/// out as its canonical envelope followed by `hash`, then `sig` and
/// `payload` when present, so SHA-256 over the envelope's bytes (closed by
/// `}`) must give `hash`, and a stored payload is
/// `{"data":<canonical>,"salt":…}` so its digest can be taken over the
/// bytes as they are. Only the envelope is parsed; what follows `hash` must
/// be laid out exactly as the writer lays it out. A match proves the bytes
/// are the ones hashed; any other outcome falls back to the full check,
/// which says what is wrong.
fn fast_check(
    line: &Line<'_>,
    stream_id: &str,
    finder: &memchr::memmem::Finder<'_>,
) -> Option<Rec> {
    if !line.terminated {
        return None;
    }
    let bytes = line.bytes;
    let mut found = None;
    for pos in finder.find_iter(bytes) {
        let hex_start = pos + HASH_KEY.len();
        let mut claimed = [0u8; 32];
        if crate::ids::decode_hex(bytes.get(hex_start..hex_start + 64)?, &mut claimed) {
            let actual: [u8; 32] = Sha256::new()
                .chain_update(bytes.get(..pos)?)
                .chain_update(b"}")
                .finalize()
                .into();
            if actual == claimed {
                found = Some((pos, claimed));
                break;
            }
        }
    }
    let (pos, hash) = found?;
    let tail = bytes
        .get(pos + HASH_KEY.len() + 64..)?
        .strip_prefix(b"\"")?;
    let (sig, tail) = match tail.strip_prefix(b",\"sig\":\"") {
        Some(t) => {
            let end = memchr::memchr(b'"', t)?;
            let sig = t.get(..end)?;
            // `ed25519:<key id>:<hex>`: nothing a JSON string would escape.
            if !sig.iter().all(|c| c.is_ascii_alphanumeric() || *c == b':') {
                return None;
            }
            (Some(sig), t.get(end + 1..)?)
        }
        None => (None, tail),
    };
    let payload = match tail.strip_prefix(b",\"payload\":") {
        Some(t) => Some(t.strip_suffix(b"}")?),
        None if tail == b"}" => None,
        None => return None,
    };
    // The envelope's members, read in place (`scan` gives up on anything
    // a canonical envelope would not hold, and on `hash`, `sig` or
    // `payload` inside it).
    let head = scan::head(bytes.get(..pos)?)?;
    if head.v != Some(SCHEMA_VERSION) || head.stream_id != Some(stream_id) {
        return None;
    }
    match (head.payload_digest, payload) {
        (None, None) => {}
        (Some(digest), Some(p)) => {
            let data = p.strip_prefix(b"{\"data\":")?;
            // `,"salt":"` + 64 hex + `"}` is 75 bytes.
            let (data, salt) = data.split_at(data.len().checked_sub(75)?);
            let salt = salt.strip_prefix(b",\"salt\":\"")?.strip_suffix(b"\"}")?;
            let mut salt_bytes = [0u8; 32];
            if !crate::ids::decode_hex(salt, &mut salt_bytes) {
                return None;
            }
            // The data must still be one JSON value, as a reader will parse it.
            if !scan::is_one_value(data) {
                return None;
            }
            let d: [u8; 32] = Sha256::new()
                .chain_update(salt_bytes)
                .chain_update(data)
                .finalize()
                .into();
            if parse_sha256(digest) != Some(d) {
                return None;
            }
        }
        _ => return None,
    }
    let kind = RecKind::of(head.kind.unwrap_or_default());
    let checkpoint = (kind == "checkpoint").then(|| {
        Box::new((
            head.tree_size.unwrap_or(u64::MAX),
            head.root.unwrap_or_default().to_string(),
        ))
    });
    let stream_start_key = (kind == "stream_start")
        .then(|| head.public_key.map(str::to_string))
        .flatten();
    Some(Rec {
        seq: head.seq?,
        hash,
        leaf: crate::merkle::leaf_hash(&hash),
        prev: head.prev.and_then(parse_sha256),
        segment: line.segment,
        offset: line.offset,
        kind,
        checkpoint,
        // Checked above to be ASCII.
        sig: sig.map(|s| String::from_utf8_lossy(s).into_owned()),
        stream_start_key,
    })
}

/// Checks one line on its own: parse, hash, payload digest. Returns what
/// the sequence checks need.
fn check_line(
    ctx: &mut Ctx<'_>,
    line: &Line<'_>,
    erased: &mut u64,
    scratch: &mut Vec<u8>,
) -> Option<Rec> {
    if let Some(rec) = fast_check(line, &ctx.stream_id, &ctx.hash_key) {
        return Some(rec);
    }
    let at = Some((line.segment, line.offset));
    let parsed = parse_strict(line.bytes);
    let mut map = match parsed {
        Ok(Value::Object(m)) if line.terminated => m,
        Ok(Value::Object(m)) if line.last => {
            // Whole record but no newline: written up to the last byte.
            ctx.add(
                FindingCode::TornTail,
                m.get("seq").and_then(Value::as_u64),
                at,
                "last line has no newline; the writer stopped mid-write".into(),
            );
            return None;
        }
        Err(_) | Ok(_) if line.last && !line.terminated => {
            ctx.add(
                FindingCode::TornTail,
                None,
                at,
                format!(
                    "last line is incomplete ({} bytes): the writer stopped mid-write",
                    line.bytes.len()
                ),
            );
            return None;
        }
        Ok(_) => {
            ctx.add(
                FindingCode::MalformedRecord,
                None,
                at,
                "line is not a JSON object".into(),
            );
            return None;
        }
        Err(e) => {
            ctx.add(
                FindingCode::MalformedRecord,
                None,
                at,
                format!("line is not a valid record: {e}"),
            );
            return None;
        }
    };
    let unhashed = take_unhashed(&mut map);
    let seq = map.get("seq").and_then(Value::as_u64);
    let claimed = unhashed.claimed_hash();
    let (Some(seq), Some(claimed)) = (seq, claimed) else {
        ctx.add(
            FindingCode::MalformedRecord,
            seq,
            at,
            "record lacks a valid seq or hash".into(),
        );
        return None;
    };
    if map.get("v").and_then(Value::as_u64) != Some(SCHEMA_VERSION)
        || map.get("stream_id").and_then(Value::as_str) != Some(ctx.stream_id.as_str())
    {
        ctx.add(
            FindingCode::WrongStream,
            Some(seq),
            at,
            format!(
                "record claims stream {:?} version {:?}; expected stream {} version {SCHEMA_VERSION}",
                map.get("stream_id"),
                map.get("v"),
                ctx.stream_id
            ),
        );
    }
    let prev = map
        .get("prev")
        .and_then(Value::as_str)
        .and_then(parse_sha256);
    let kind = RecKind::of(map.get("kind").and_then(Value::as_str).unwrap_or_default());
    let payload_digest_field = map
        .get("payload_digest")
        .and_then(Value::as_str)
        .map(str::to_string);
    let checkpoint = if kind == "checkpoint" {
        Some(Box::new((
            map.get("tree_size")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX),
            map.get("root")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )))
    } else {
        None
    };
    let stream_start_key = if kind == "stream_start" {
        map.get("public_key")
            .and_then(Value::as_str)
            .map(str::to_string)
    } else {
        None
    };
    let sig = unhashed.sig_str().map(str::to_string);
    let envelope = Value::Object(map);
    match envelope_hash(&envelope, scratch) {
        Ok(h) if h == claimed => {}
        Ok(_) => ctx.add(
            FindingCode::HashMismatch,
            Some(seq),
            at,
            "record content does not match its hash: the record was altered".into(),
        ),
        Err(e) => ctx.add(
            FindingCode::MalformedRecord,
            Some(seq),
            at,
            format!("cannot canonicalize: {e}"),
        ),
    }
    if let Some(digest) = payload_digest_field {
        match check_payload(unhashed.payload.as_ref(), &digest, scratch) {
            PayloadState::Ok => {}
            PayloadState::Erased => {
                *erased += 1;
                ctx.add(
                    FindingCode::ErasedPayload,
                    Some(seq),
                    at,
                    "payload erased; the envelope still verifies".into(),
                );
            }
            PayloadState::Mismatch(why) => {
                ctx.add(FindingCode::PayloadMismatch, Some(seq), at, why)
            }
        }
    } else if unhashed.payload.is_some() {
        ctx.add(
            FindingCode::PayloadMismatch,
            Some(seq),
            at,
            "payload present on a record without payload_digest".into(),
        );
    }
    Some(Rec {
        seq,
        hash: claimed,
        leaf: crate::merkle::leaf_hash(&claimed),
        prev,
        segment: line.segment,
        offset: line.offset,
        kind,
        checkpoint,
        sig,
        stream_start_key,
    })
}

/// What the per-line checks give: the records, their findings, and how
/// many payloads were erased.
type Checked = (Vec<Rec>, Vec<Finding>, u64);

/// Bytes of a segment read and checked at a time.
const READ_CHUNK: u64 = 4 << 20;

/// No record line is shorter (its `stream_id`, `prev` and `hash` alone
/// take 180 bytes).
const MIN_RECORD_BYTES: u64 = 192;

/// Verifies one stream directory, reading each segment a few MB at a time
/// into a reused buffer: memory stays bounded by that (or the longest
/// line) plus a small record per line, however long the stream, and the
/// buffer is not faulted in afresh for every segment.
pub fn verify_stream_dir(
    dir: &Path,
    opts: &VerifyOptions,
    cosigned: &[Cosignature],
) -> Result<(StreamReport, Vec<Finding>)> {
    use std::io::Read as _;
    let segments = crate::reader::list_segments(dir)?;
    let stream_id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let read_err = |path: &Path, e: std::io::Error| {
        crate::error::AuditError::new(
            crate::error::ErrorKind::InvalidLog,
            format!("cannot read {}: {e}", path.display()),
        )
        .with_source(e)
    };
    // The stream's last line is in the last segment that is not empty.
    let mut last_nonempty = None;
    let mut total = 0u64;
    for (i, path) in segments.iter().enumerate() {
        let len = std::fs::metadata(path)
            .map_err(|e| read_err(path, e))?
            .len();
        if len > 0 {
            last_nonempty = Some(i);
        }
        total = total.saturating_add(len);
    }
    // Room for as many records as the stream can hold (up to a million;
    // beyond, it grows), taken once: the records vector grown by doubling
    // copied itself into fresh pages (~8 % of the profile). Pages reserved
    // and never written cost no memory.
    let most = usize::try_from(total / MIN_RECORD_BYTES).unwrap_or(usize::MAX);
    let mut checked: Checked = (Vec::with_capacity(most.min(1 << 20)), Vec::new(), 0);
    let mut buf = Vec::with_capacity(2 * READ_CHUNK as usize);
    for (i, path) in segments.iter().enumerate() {
        let mut file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
        // Offset in the segment of `buf`'s first byte.
        let mut base = 0u64;
        buf.clear();
        loop {
            let got = (&mut file)
                .take(READ_CHUNK)
                .read_to_end(&mut buf)
                .map_err(|e| read_err(path, e))?;
            let eof = got == 0;
            // Until the end of the file, the last line (complete or not)
            // waits for the next chunk: only then is it known to be the
            // segment's last.
            let upto = if eof {
                buf.len()
            } else {
                match buf
                    .get(..buf.len().saturating_sub(1))
                    .and_then(|b| memchr::memrchr(b'\n', b))
                {
                    Some(nl) => nl + 1,
                    None => continue,
                }
            };
            let last = eof && last_nonempty == Some(i);
            let mut lines =
                crate::reader::segment_lines(i, buf.get(..upto).unwrap_or_default(), last);
            for l in &mut lines {
                l.offset += base;
            }
            check_lines(&lines, &segments, &stream_id, &mut checked);
            if eof {
                break;
            }
            buf.drain(..upto);
            base += upto as u64;
        }
    }
    Ok(finish_stream(
        dir, &segments, stream_id, checked, opts, cosigned,
    ))
}

/// Adds what one part of the per-line checks found.
fn merge(into: &mut Checked, (recs, findings, erased): Checked) {
    into.0.extend(recs);
    into.1.extend(findings);
    into.2 += erased;
}

/// Per-line checks of a stream, spread over the machine's cores (each
/// record is independent until the sequence is checked), added to `out`.
fn check_lines(lines: &[Line<'_>], segments: &[PathBuf], stream_id: &str, out: &mut Checked) {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8);
    let chunk = lines.len().div_ceil(workers).max(1024);
    let run = |part: &[Line<'_>]| {
        let mut ctx = Ctx {
            segments,
            hash_key: memchr::memmem::Finder::new(HASH_KEY),
            stream_id: stream_id.to_string(),
            findings: Vec::new(),
        };
        let mut erased = 0u64;
        let mut scratch = Vec::with_capacity(4096);
        // Sized once: grown by doubling, it took fresh pages at every step.
        let mut recs: Vec<Rec> = Vec::with_capacity(part.len());
        recs.extend(
            part.iter()
                .filter_map(|l| check_line(&mut ctx, l, &mut erased, &mut scratch)),
        );
        (recs, ctx.findings, erased)
    };
    if lines.len() <= chunk {
        return merge(out, run(lines));
    }
    // The calling thread checks the last part itself.
    let parts: Vec<&[Line<'_>]> = lines.chunks(chunk).collect();
    let Some((own, others)) = parts.split_last() else {
        return merge(out, run(lines));
    };
    let results: Vec<(Vec<Rec>, Vec<Finding>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter()
            .map(|part| scope.spawn(move || run(part)))
            .collect();
        let mine = run(own);
        let mut all: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        all.push(mine);
        all
    });
    out.0.reserve(lines.len());
    for part in results {
        merge(out, part);
    }
}

/// Verifies one stream already read into memory.
pub fn verify_stream(files: &StreamFiles, opts: &VerifyOptions) -> (StreamReport, Vec<Finding>) {
    verify_stream_witnessed(files, opts, &[])
}

/// [`verify_stream`] plus the checks against a witness's co-signatures of
/// this stream's checkpoints.
pub fn verify_stream_witnessed(
    files: &StreamFiles,
    opts: &VerifyOptions,
    cosigned: &[Cosignature],
) -> (StreamReport, Vec<Finding>) {
    let stream_id = files.dir_name();
    let lines = files.lines();
    let mut checked: Checked = (Vec::new(), Vec::new(), 0);
    check_lines(&lines, &files.segments, &stream_id, &mut checked);
    finish_stream(
        &files.dir,
        &files.segments,
        stream_id,
        checked,
        opts,
        cosigned,
    )
}

/// The checks across records, once each line has been checked on its own:
/// order, chain, checkpoints, signatures, the signed head, the witness.
fn finish_stream(
    dir: &Path,
    segments: &[PathBuf],
    stream_id: String,
    (recs, line_findings, erased): Checked,
    opts: &VerifyOptions,
    cosigned: &[Cosignature],
) -> (StreamReport, Vec<Finding>) {
    let mut ctx = Ctx {
        segments,
        hash_key: memchr::memmem::Finder::new(HASH_KEY),
        stream_id,
        findings: line_findings,
    };

    let (by_seq, order) = index_by_seq(&mut ctx, &recs);

    // The stream's key.
    let key = match order.first().and_then(|i| recs.get(*i)) {
        Some(r) if r.seq == 0 && r.kind == "stream_start" => {
            match r.stream_start_key.as_deref().map(PublicKey::from_hex) {
                Some(Ok(k)) => Some(k),
                _ => {
                    ctx.add(
                        FindingCode::BadStreamStart,
                        Some(0),
                        Some((r.segment, r.offset)),
                        "stream_start has no valid public_key".into(),
                    );
                    None
                }
            }
        }
        first => {
            ctx.add(
                FindingCode::BadStreamStart,
                first.map(|r| r.seq),
                None,
                "stream does not begin with stream_start (seq 0)".into(),
            );
            None
        }
    };
    if let Some(k) = &key
        && !opts.trusted_keys.is_empty()
        && !opts.trusted_keys.iter().any(|t| t == k)
    {
        ctx.add(
            FindingCode::UnknownKey,
            Some(0),
            None,
            format!(
                "stream is signed by key {} which is not among the trusted keys",
                k.key_id()
            ),
        );
    }

    let mut tree = CompactTree::new();
    let mut expected = 0u64;
    let mut prev_hash: Option<[u8; 32]> = None;
    let mut checkpoints_verified = 0u64;
    let mut last_checkpoint_size: Option<u64> = None;
    let mut stream_end_seq: Option<u64> = None;
    let genesis = parse_sha256(GENESIS_PREV);
    for &i in &order {
        let Some(r) = recs.get(i) else { continue };
        let at = Some((r.segment, r.offset));
        if r.seq > expected {
            let msg = if r.seq == expected + 1 {
                format!("record seq {expected} is missing (deleted)")
            } else {
                format!(
                    "records seq {expected}..={} are missing (deleted)",
                    r.seq - 1
                )
            };
            // The successor's prev cannot be checked; later checkpoint
            // roots will not match the leaves present, and say so.
            ctx.add(FindingCode::MissingRecords, Some(expected), at, msg);
        } else {
            let want = if r.seq == 0 { genesis } else { prev_hash };
            if want.is_some() && r.prev != want {
                ctx.add(
                    FindingCode::ChainBreak,
                    Some(r.seq),
                    at,
                    format!(
                        "prev of seq {} does not match the hash of seq {}: forged or inserted",
                        r.seq,
                        r.seq.saturating_sub(1)
                    ),
                );
            }
        }
        if let Some((size, root)) = r.checkpoint.as_deref() {
            let computed = crate::chain::fmt_sha256(&tree.root());
            if *size != tree.size() || *root != computed {
                ctx.add(
                    FindingCode::CheckpointMismatch,
                    Some(r.seq),
                    at,
                    format!(
                        "checkpoint says {size} records with root {root}; the log has {} with root {computed}",
                        tree.size()
                    ),
                );
            } else if check_sig(&mut ctx, key.as_ref(), r, true) {
                checkpoints_verified += 1;
            }
            last_checkpoint_size = Some(r.seq);
        } else if r.sig.is_some() {
            check_sig(&mut ctx, key.as_ref(), r, false);
        }
        if r.kind == "stream_end" {
            stream_end_seq = Some(r.seq);
        }
        tree.push_leaf_hash(r.leaf);
        prev_hash = Some(r.hash);
        expected = r.seq + 1;
    }

    // The signed head: records it covers must all be here.
    check_head(&mut ctx, dir, key.as_ref(), &recs, &by_seq, expected);
    check_witness(&mut ctx, cosigned, &recs, &by_seq, expected);

    let present = expected;
    let open = stream_end_seq.is_none();
    if open {
        ctx.add(
            FindingCode::OpenStream,
            None,
            None,
            "stream has no stream_end: its writer is still running or was stopped without closing"
                .into(),
        );
    }
    let covered = last_checkpoint_size.map_or(0, |s| s + 1);
    if present > covered {
        ctx.add(
            FindingCode::UnsignedTail,
            Some(covered),
            None,
            format!(
                "{} record(s) after the last checkpoint are not covered by a signature",
                present - covered
            ),
        );
    }

    let tampered = ctx
        .findings
        .iter()
        .any(|f| f.severity == Severity::Tampered);
    let torn = ctx.findings.iter().any(|f| f.code == FindingCode::TornTail);
    let status = if tampered {
        StreamStatus::Tampered
    } else if torn {
        StreamStatus::Truncated
    } else if open {
        StreamStatus::Open
    } else {
        StreamStatus::Clean
    };
    let summary = StreamReport {
        stream_id: ctx.stream_id.clone(),
        records: recs.len() as u64,
        checkpoints_verified,
        key_id: key.as_ref().map(|k| k.key_id().to_string()),
        erased_payloads: erased,
        status,
    };
    (summary, ctx.findings)
}

/// Where the first record of each seq sits in the file order.
enum SeqIndex {
    /// Record `i` has seq `i`, for every record: the common case, with no
    /// map to build.
    InOrder(usize),
    Map(HashMap<u64, usize>),
}

impl SeqIndex {
    fn get(&self, seq: u64) -> Option<usize> {
        match self {
            SeqIndex::InOrder(n) => usize::try_from(seq).ok().filter(|i| i < n),
            SeqIndex::Map(m) => m.get(&seq).copied(),
        }
    }

    fn positions(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match self {
            SeqIndex::InOrder(n) => Box::new(0..*n),
            SeqIndex::Map(m) => Box::new(m.values().copied()),
        }
    }
}

/// The records' positions in seq order (first occurrence of each seq),
/// and an index by seq; reports duplicated, conflicting and reordered
/// records.
fn index_by_seq(ctx: &mut Ctx<'_>, recs: &[Rec]) -> (SeqIndex, Vec<usize>) {
    if recs
        .iter()
        .enumerate()
        .all(|(i, r)| u64::try_from(i).is_ok_and(|i| i == r.seq))
    {
        return (SeqIndex::InOrder(recs.len()), (0..recs.len()).collect());
    }
    // Order: a record whose seq is lower than one before it in the file.
    let mut by_seq: HashMap<u64, usize> = HashMap::with_capacity(recs.len());
    let mut max_seq_seen: Option<u64> = None;
    for (i, r) in recs.iter().enumerate() {
        let at = Some((r.segment, r.offset));
        if let Some(&first) = by_seq.get(&r.seq) {
            let same = recs.get(first).is_some_and(|f| f.hash == r.hash);
            if same {
                ctx.add(
                    FindingCode::DuplicateRecord,
                    Some(r.seq),
                    at,
                    format!("record seq {} appears again", r.seq),
                );
            } else {
                ctx.add(
                    FindingCode::ConflictingRecord,
                    Some(r.seq),
                    at,
                    format!("a second, different record with seq {}: inserted", r.seq),
                );
            }
            continue;
        }
        if max_seq_seen.is_some_and(|m| r.seq < m) {
            ctx.add(
                FindingCode::Reordered,
                Some(r.seq),
                at,
                format!(
                    "record seq {} appears after seq {}",
                    r.seq,
                    max_seq_seen.unwrap_or(0)
                ),
            );
        }
        max_seq_seen = Some(max_seq_seen.map_or(r.seq, |m| m.max(r.seq)));
        by_seq.insert(r.seq, i);
    }
    let mut order: Vec<usize> = by_seq.values().copied().collect();
    order.sort_by_key(|i| recs.get(*i).map_or(u64::MAX, |r| r.seq));
    (SeqIndex::Map(by_seq), order)
}

fn check_sig(ctx: &mut Ctx<'_>, key: Option<&PublicKey>, r: &Rec, required: bool) -> bool {
    let at = Some((r.segment, r.offset));
    let Some(sig) = &r.sig else {
        if required {
            ctx.add(
                FindingCode::MissingSignature,
                Some(r.seq),
                at,
                "checkpoint has no signature".into(),
            );
        }
        return false;
    };
    let Some(key) = key else {
        ctx.add(
            FindingCode::UnknownKey,
            Some(r.seq),
            at,
            "no stream key to check the signature with".into(),
        );
        return false;
    };
    match key.verify_hash(&r.hash, sig) {
        Ok(()) => true,
        Err(SigError::UnknownKey(k)) => {
            ctx.add(
                FindingCode::UnknownKey,
                Some(r.seq),
                at,
                format!("signed by key {k}, not the stream's key {}", key.key_id()),
            );
            false
        }
        Err(e) => {
            ctx.add(
                FindingCode::BadSignature,
                Some(r.seq),
                at,
                format!("{} at seq {}: {e}", r.kind, r.seq),
            );
            false
        }
    }
}

fn check_head(
    ctx: &mut Ctx<'_>,
    dir: &Path,
    key: Option<&PublicKey>,
    recs: &[Rec],
    by_seq: &SeqIndex,
    present: u64,
) {
    let path = dir.join(HEAD_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        if by_seq
            .positions()
            .any(|i| recs.get(i).is_some_and(|r| r.kind == "checkpoint"))
        {
            ctx.add(
                FindingCode::HeadMismatch,
                None,
                None,
                format!(
                    "{} is missing although the stream has checkpoints",
                    path.display()
                ),
            );
        }
        return;
    };
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let Ok(Value::Object(mut map)) = parse_strict(text) else {
        ctx.add(
            FindingCode::HeadMismatch,
            None,
            None,
            format!("{} is not a checkpoint record", path.display()),
        );
        return;
    };
    let unhashed = take_unhashed(&mut map);
    let seq = map.get("seq").and_then(Value::as_u64);
    let claimed = unhashed.claimed_hash();
    let mut scratch = Vec::new();
    let actual = envelope_hash(&Value::Object(map.clone()), &mut scratch).ok();
    let (Some(seq), Some(claimed)) = (seq, claimed) else {
        ctx.add(
            FindingCode::HeadMismatch,
            None,
            None,
            "head.json lacks seq or hash".into(),
        );
        return;
    };
    let sig_ok = match (key, unhashed.sig_str()) {
        (Some(k), Some(sig)) => k.verify_hash(&claimed, sig).is_ok(),
        _ => false,
    };
    if actual != Some(claimed)
        || !sig_ok
        || map.get("kind").and_then(Value::as_str) != Some("checkpoint")
    {
        ctx.add(
            FindingCode::HeadMismatch,
            Some(seq),
            None,
            "head.json is not a validly signed checkpoint of this stream".into(),
        );
        return;
    }
    if seq >= present {
        ctx.add(
            FindingCode::CutTail,
            Some(present),
            None,
            format!(
                "the signed head covers {} records but only {present} are present: the tail was cut",
                seq + 1
            ),
        );
        return;
    }
    match by_seq.get(seq).and_then(|i| recs.get(i)) {
        Some(r) if r.hash == claimed => {}
        _ => ctx.add(
            FindingCode::HeadMismatch,
            Some(seq),
            None,
            format!("the signed head's checkpoint at seq {seq} differs from the log's"),
        ),
    }
}

/// The stream against the checkpoints a witness co-signed: the latest one
/// must be present (else the tail was cut after the witness saw it), and
/// every co-signed seq must hold the co-signed record.
fn check_witness(
    ctx: &mut Ctx<'_>,
    cosigned: &[Cosignature],
    recs: &[Rec],
    by_seq: &SeqIndex,
    present: u64,
) {
    if let Some(latest) = cosigned.iter().max_by_key(|c| c.seq)
        && latest.seq >= present
    {
        ctx.add(
            FindingCode::CutTail,
            Some(present),
            None,
            format!(
                "witness {} co-signed the checkpoint at seq {} ({} records) but only {present} are present: the tail was cut after it was shipped",
                latest.witness_key_id,
                latest.seq,
                latest.seq + 1
            ),
        );
    }
    for c in cosigned.iter().filter(|c| c.seq < present) {
        let claimed = parse_sha256(&c.checkpoint_hash);
        match by_seq.get(c.seq).and_then(|i| recs.get(i)) {
            Some(r) if Some(r.hash) == claimed => {}
            _ => ctx.add(
                FindingCode::WitnessMismatch,
                Some(c.seq),
                None,
                format!(
                    "witness {} co-signed a different record at seq {} (checkpoint {})",
                    c.witness_key_id, c.seq, c.checkpoint_hash
                ),
            ),
        }
    }
}

/// What [`StreamVerifier::push`] accepted.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The record's seq.
    pub seq: u64,
    /// The record's hash.
    pub hash: [u8; 32],
    /// The record's `kind`.
    pub kind: String,
    /// Whether this is a checkpoint whose root and signature verified:
    /// every record up to and including it is now covered by a signature.
    pub checkpoint_verified: bool,
    /// Findings that are not tampering (an erased payload).
    pub notes: Vec<Finding>,
}

/// Verifies one stream record by record as the records arrive, with the
/// same checks as [`verify_log`] (hash, payload digest, `prev` chain,
/// checkpoint roots and signatures, the stream key against the trusted
/// keys), for a collector that receives a stream over the network. It
/// holds O(log n) state, not the records.
///
/// Records must be pushed in seq order; the caller drops duplicates and
/// reorders first. What [`verify_log`] checks against files (`head.json`,
/// torn tails) is not part of it.
pub struct StreamVerifier {
    stream_id: String,
    trusted: Vec<PublicKey>,
    key: Option<PublicKey>,
    tree: CompactTree,
    next_seq: u64,
    prev: [u8; 32],
    scratch: Vec<u8>,
    finder: memchr::memmem::Finder<'static>,
    checkpoints_verified: u64,
}

impl std::fmt::Debug for StreamVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamVerifier")
            .field("stream_id", &self.stream_id)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl StreamVerifier {
    /// A verifier for the stream `stream_id`, from its first record.
    /// With `opts.trusted_keys` non-empty, the stream's key must be one.
    pub fn new(stream_id: &str, opts: &VerifyOptions) -> StreamVerifier {
        StreamVerifier {
            stream_id: stream_id.to_string(),
            trusted: opts.trusted_keys.clone(),
            key: None,
            tree: CompactTree::new(),
            next_seq: 0,
            prev: [0u8; 32],
            scratch: Vec::with_capacity(4096),
            finder: memchr::memmem::Finder::new(HASH_KEY),
            checkpoints_verified: 0,
        }
    }

    /// The stream id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The seq the next record must have (= records accepted so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Checkpoints whose root and signature verified so far.
    pub fn checkpoints_verified(&self) -> u64 {
        self.checkpoints_verified
    }

    /// The stream's key, once its `stream_start` was accepted.
    pub fn key(&self) -> Option<&PublicKey> {
        self.key.as_ref()
    }

    /// Checks the next record (one line, without its newline). On any
    /// tampering finding the record is refused, the findings are returned
    /// (without file locations: the caller knows where the line came
    /// from) and the verifier's state is unchanged.
    pub fn push(&mut self, line: &[u8]) -> std::result::Result<Accepted, Vec<Finding>> {
        let no_files: [PathBuf; 0] = [];
        let mut ctx = Ctx {
            segments: &no_files,
            hash_key: self.finder.clone(),
            stream_id: self.stream_id.clone(),
            findings: Vec::new(),
        };
        let l = Line {
            segment: 0,
            offset: 0,
            bytes: line,
            terminated: true,
            last: false,
        };
        let mut erased = 0u64;
        let rec = check_line(&mut ctx, &l, &mut erased, &mut self.scratch);
        let mut checkpoint_verified = false;
        let mut key = self.key.clone();
        if let Some(r) = &rec {
            if r.seq != self.next_seq {
                let (code, msg) = if r.seq > self.next_seq {
                    (
                        FindingCode::MissingRecords,
                        format!("expected seq {}, got seq {}", self.next_seq, r.seq),
                    )
                } else {
                    (
                        FindingCode::Reordered,
                        format!("seq {} arrived after seq {}", r.seq, self.next_seq - 1),
                    )
                };
                ctx.add(code, Some(r.seq), None, msg);
            } else {
                if r.seq == 0 {
                    key = self.start_key(&mut ctx, r);
                }
                let want = if r.seq == 0 { [0u8; 32] } else { self.prev };
                if r.prev != Some(want) {
                    ctx.add(
                        FindingCode::ChainBreak,
                        Some(r.seq),
                        None,
                        format!(
                            "prev of seq {} does not match the hash of the record before it",
                            r.seq
                        ),
                    );
                }
                if let Some((size, root)) = r.checkpoint.as_deref() {
                    let computed = crate::chain::fmt_sha256(&self.tree.root());
                    if *size != self.tree.size() || *root != computed {
                        ctx.add(
                            FindingCode::CheckpointMismatch,
                            Some(r.seq),
                            None,
                            format!(
                                "checkpoint says {size} records with root {root}; the stream has {} with root {computed}",
                                self.tree.size()
                            ),
                        );
                    } else {
                        checkpoint_verified = check_sig(&mut ctx, key.as_ref(), r, true);
                    }
                } else if r.sig.is_some() {
                    check_sig(&mut ctx, key.as_ref(), r, false);
                }
            }
        }
        for f in &mut ctx.findings {
            f.file = None;
            f.offset = None;
        }
        let tampered = ctx
            .findings
            .iter()
            .any(|f| f.severity == Severity::Tampered);
        let r = match rec {
            Some(r) if !tampered => r,
            _ => return Err(ctx.findings),
        };
        self.key = key;
        self.tree.push(&r.hash);
        self.prev = r.hash;
        self.next_seq = r.seq + 1;
        if checkpoint_verified {
            self.checkpoints_verified += 1;
        }
        Ok(Accepted {
            seq: r.seq,
            hash: r.hash,
            kind: r.kind.as_str().to_string(),
            checkpoint_verified,
            notes: ctx.findings,
        })
    }

    fn start_key(&self, ctx: &mut Ctx<'_>, r: &Rec) -> Option<PublicKey> {
        let key = match r.stream_start_key.as_deref().map(PublicKey::from_hex) {
            Some(Ok(k)) if r.kind == "stream_start" => k,
            _ => {
                ctx.add(
                    FindingCode::BadStreamStart,
                    Some(0),
                    None,
                    "seq 0 is not a stream_start with a valid public_key".into(),
                );
                return None;
            }
        };
        if !self.trusted.is_empty() && !self.trusted.contains(&key) {
            ctx.add(
                FindingCode::UnknownKey,
                Some(0),
                None,
                format!(
                    "stream is signed by key {} which is not among the trusted keys",
                    key.key_id()
                ),
            );
        }
        Some(key)
    }
}

enum PayloadState {
    Ok,
    Erased,
    Mismatch(String),
}

fn check_payload(payload: Option<&Value>, digest: &str, scratch: &mut Vec<u8>) -> PayloadState {
    let Some(p) = payload else {
        return PayloadState::Erased;
    };
    let Some(obj) = p.as_object() else {
        return PayloadState::Mismatch("payload is not an object".into());
    };
    if obj.contains_key("erased") && !obj.contains_key("data") {
        return PayloadState::Erased;
    }
    let salt = obj
        .get("salt")
        .and_then(Value::as_str)
        .and_then(|s| hex::decode(s).ok());
    let (Some(salt), Some(data)) = (salt, obj.get("data")) else {
        return PayloadState::Mismatch("payload lacks salt or data".into());
    };
    match payload_digest(&salt, data, scratch) {
        Ok(d) if d == digest => PayloadState::Ok,
        Ok(_) => PayloadState::Mismatch(
            "payload does not match payload_digest: the payload was altered".into(),
        ),
        Err(e) => PayloadState::Mismatch(format!("payload cannot be canonicalized: {e}")),
    }
}

/// Removes a record's payload in a stream (GDPR erasure): the envelope,
/// and so every hash, signature and proof, stays valid. Rewrites the
/// segment atomically. Returns the number of payloads erased.
pub fn erase_payloads(log: &Path, event_ids: &[String], reason: &str) -> Result<u64> {
    use crate::error::{AuditError, ErrorKind};
    let mut erased = 0;
    for dir in list_streams(log)? {
        let files = StreamFiles::read(&dir)?;
        for seg in &files.segments {
            let data = std::fs::read(seg)
                .map_err(|e| AuditError::io(format!("cannot read {}", seg.display()), e))?;
            let mut out = Vec::with_capacity(data.len());
            let mut changed = false;
            for raw in data.split_inclusive(|b| *b == b'\n') {
                let line = raw.strip_suffix(b"\n").unwrap_or(raw);
                let mut rewritten = None;
                if let Ok(Value::Object(mut m)) = parse_strict(line) {
                    let id = m
                        .get("event_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if event_ids.iter().any(|e| e == id) && m.contains_key("payload") {
                        let mut marker = Map::new();
                        marker.insert("erased".into(), Value::Bool(true));
                        marker.insert("reason".into(), Value::String(reason.into()));
                        marker.insert(
                            "at".into(),
                            Value::String(crate::ids::Timestamp::now().to_rfc3339()),
                        );
                        m.insert("payload".into(), Value::Object(marker));
                        let mut s = serde_json::to_vec(&Value::Object(m))
                            .map_err(|e| AuditError::new(ErrorKind::InvalidLog, e.to_string()))?;
                        s.push(b'\n');
                        rewritten = Some(s);
                        erased += 1;
                    }
                }
                match rewritten {
                    Some(s) => {
                        changed = true;
                        out.extend_from_slice(&s);
                    }
                    None => out.extend_from_slice(raw),
                }
            }
            if changed {
                let tmp = seg.with_extension("jsonl.tmp");
                std::fs::write(&tmp, &out)
                    .and_then(|_| std::fs::rename(&tmp, seg))
                    .map_err(|e| AuditError::io(format!("cannot rewrite {}", seg.display()), e))?;
            }
        }
    }
    Ok(erased)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Body, Decision};
    use crate::{AuditLog, Event, LogConfig, PayloadPart};
    use std::time::Duration;

    #[test]
    fn writer_lines_take_the_fast_path() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(LogConfig::new(dir.path())).unwrap();
        for i in 0..20 {
            let e = Event::new(Body::Decision(Decision {
                decision: format!("d{i}"),
                ..Default::default()
            }))
            .with_part(
                PayloadPart::Reasoning,
                serde_json::json!({"why": "x", "n": i}),
            );
            log.emit(e).unwrap();
        }
        assert!(log.shutdown(Duration::from_secs(10)));
        let files = StreamFiles::read(log.stream_dir()).unwrap();
        let id = files.dir_name();
        let finder = memchr::memmem::Finder::new(HASH_KEY);
        for line in files.lines() {
            assert!(
                fast_check(&line, &id, &finder).is_some(),
                "slow path for {}",
                String::from_utf8_lossy(line.bytes)
            );
        }
    }

    #[test]
    fn stream_verifier_checks_records_as_they_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = LogConfig::new(dir.path());
        cfg.checkpoint_every = 7;
        let log = AuditLog::open(cfg).unwrap();
        for i in 0..20 {
            let e = Event::new(Body::Decision(Decision {
                decision: format!("d{i}"),
                ..Default::default()
            }))
            .with_part(PayloadPart::Reasoning, serde_json::json!({"n": i}));
            log.emit(e).unwrap();
        }
        assert!(log.shutdown(Duration::from_secs(10)));
        let files = StreamFiles::read(log.stream_dir()).unwrap();
        let id = files.dir_name();
        let lines: Vec<Vec<u8>> = files.lines().iter().map(|l| l.bytes.to_vec()).collect();
        let key = crate::keys::load_or_create_dev_key(dir.path())
            .unwrap()
            .0
            .public();
        let trusted = VerifyOptions {
            trusted_keys: vec![key],
        };

        // A clean stream, record by record; the last checkpoint covers all.
        let mut v = StreamVerifier::new(&id, &trusted);
        let mut verified = 0;
        for (i, l) in lines.iter().enumerate() {
            let a = v.push(l).unwrap();
            assert_eq!(a.seq, i as u64);
            verified += u64::from(a.checkpoint_verified);
        }
        assert!(verified >= 3);
        assert_eq!(v.checkpoints_verified(), verified);
        assert_eq!(v.next_seq(), lines.len() as u64);

        // A flipped byte is refused with HashMismatch; the state is kept
        // and the genuine record is accepted afterwards.
        let mut v = StreamVerifier::new(&id, &trusted);
        for l in &lines[..5] {
            v.push(l).unwrap();
        }
        let genuine = String::from_utf8(lines[5].clone()).unwrap();
        let flipped = genuine.replacen("\"decision\":\"d", "\"decision\":\"e", 1);
        assert_ne!(flipped, genuine);
        let findings = v.push(flipped.as_bytes()).unwrap_err();
        assert_eq!(findings[0].code, FindingCode::HashMismatch);
        assert_eq!(findings[0].seq, Some(5));
        assert_eq!(v.next_seq(), 5);
        v.push(genuine.as_bytes()).unwrap();

        // A record skipped.
        let findings = v.push(&lines[7]).unwrap_err();
        assert_eq!(findings[0].code, FindingCode::MissingRecords);

        // A key nobody trusts.
        let other = crate::keys::KeyPair::generate().unwrap().public();
        let mut v = StreamVerifier::new(
            &id,
            &VerifyOptions {
                trusted_keys: vec![other],
            },
        );
        let findings = v.push(&lines[0]).unwrap_err();
        assert_eq!(findings[0].code, FindingCode::UnknownKey);
    }
}
