//! The collector: consumes records from many hosts, drops duplicates by
//! (stream, seq), re-verifies every stream as its records arrive, writes
//! what a verified checkpoint covers into a central log partitioned by
//! tenant and retention class, and quarantines a broken stream with the
//! verifier's findings instead of accepting it.
//!
//! Layout of the output directory:
//!
//! ```text
//! DIR/<tenant>/<retention_class>/<stream_id>/seg-000000.jsonl …, head.json
//! DIR/quarantine/<stream_id>/records.jsonl, finding.json
//! ```
//!
//! `agent-audit verify DIR/<tenant>/<retention_class>` checks the central
//! log like any local one. A stream's partition is that of its first
//! event record (the writer's own records carry none).
//!
//! A record is acknowledged to the source only once it is in the central
//! log (synced) or in quarantine, or is a duplicate of a record that is:
//! a collector killed at any point loses nothing, and on restart rebuilds
//! each stream's verifier state from the central log it wrote.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use agent_audit::keys::{KeyPair, PublicKey};
use agent_audit::reader::StreamFiles;
use agent_audit::verify::{Finding, FindingCode, StreamVerifier, VerifyOptions};
use agent_audit::witness::WITNESS_FILE;
use agent_audit::writer::{HEAD_FILE, segment_file_name};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::record::{Partition, partition_token, record_info};
use crate::ship::{backoff, sleep_unless_stopped};

/// The quarantine directory under the output directory.
pub const QUARANTINE_DIR: &str = "quarantine";
/// A quarantined stream's findings.
pub const FINDING_FILE: &str = "finding.json";
/// A quarantined stream's records that were not accepted, as received.
pub const QUARANTINE_RECORDS: &str = "records.jsonl";

/// One record as delivered by a source.
#[derive(Debug)]
pub struct Delivery<A> {
    /// The record line, without newline.
    pub payload: Vec<u8>,
    /// The stream id the sender put beside the record (used only when the
    /// record itself does not parse).
    pub stream_hint: Option<String>,
    /// The seq the sender put beside the record (same use).
    pub seq_hint: Option<u64>,
    /// How to acknowledge it.
    pub ack: A,
}

/// Where a collector gets records from: NATS JetStream now, Kafka later.
pub trait Source {
    /// Acknowledgement handle of one delivery.
    type Ack;

    /// Up to `max` records, waiting up to `wait` for the first. Records
    /// not acknowledged are delivered again later.
    fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<Self::Ack>>>;

    /// Acknowledges deliveries: the source will not deliver them again.
    fn ack(&mut self, acks: Vec<Self::Ack>) -> Result<()>;
}

/// How the collector runs.
#[derive(Clone, Debug)]
pub struct CollectOptions {
    /// The central log directory.
    pub out_dir: PathBuf,
    /// Writer keys trusted to sign streams; a stream signed by another
    /// key is quarantined. Empty: any key (not for production).
    pub trusted_keys: Vec<PublicKey>,
    /// Return once nothing arrived for this long; `None`: until stopped.
    pub until_idle: Option<Duration>,
    /// Records fetched at once.
    pub fetch_max: usize,
    /// Longest wait for a fetch.
    pub fetch_wait: Duration,
    /// Segment size in the central log.
    pub segment_max_bytes: u64,
    /// Records one stream may hold uncovered by a checkpoint (or ahead of
    /// a missing one) before they are written anyway (or, ahead of a gap,
    /// the stream is quarantined).
    pub max_held_records: usize,
    /// First retry delay when the source fails.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Print failures and quarantines to stderr.
    pub report_errors: bool,
    /// The collector's own key, as a witness: every checkpoint it accepts
    /// is co-signed into `witness.jsonl` beside the stream's segments
    /// ([`agent_audit::witness`]), so a host's log verified against them
    /// shows a tail cut after it was shipped.
    pub witness_key: Option<Arc<KeyPair>>,
}

impl CollectOptions {
    /// Defaults for an output directory.
    pub fn new(out_dir: impl Into<PathBuf>) -> CollectOptions {
        CollectOptions {
            out_dir: out_dir.into(),
            trusted_keys: Vec::new(),
            until_idle: None,
            fetch_max: 512,
            fetch_wait: Duration::from_millis(500),
            segment_max_bytes: 64 << 20,
            max_held_records: 20_000,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            report_errors: true,
            witness_key: None,
        }
    }
}

/// What a collector run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CollectStats {
    /// Records received (duplicates included).
    pub received: u64,
    /// Records written to the central log.
    pub committed: u64,
    /// Records dropped as duplicates.
    pub duplicates: u64,
    /// Streams quarantined in this run.
    pub quarantined_streams: u64,
    /// Records written to quarantine.
    pub quarantined_records: u64,
    /// Streams seen.
    pub streams: u64,
    /// Records received but not yet covered by a checkpoint at exit (not
    /// acknowledged: they are delivered again).
    pub held: u64,
}

/// Runs the collector on `source` until `stop` is set or, with
/// `until_idle`, until nothing arrived for that long. Errors when the
/// output directory cannot be written.
pub fn collect<S: Source>(
    source: &mut S,
    opts: &CollectOptions,
    stop: &AtomicBool,
) -> Result<CollectStats> {
    let mut c = Collector::<S::Ack>::new(opts)?;
    let mut last = Instant::now();
    let mut attempt = 0u32;
    let mut to_ack = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match source.fetch(opts.fetch_max.max(1), opts.fetch_wait) {
            Ok(ds) if ds.is_empty() => {
                attempt = 0;
                if opts.until_idle.is_some_and(|d| last.elapsed() >= d) {
                    break;
                }
            }
            Ok(ds) => {
                attempt = 0;
                last = Instant::now();
                for d in ds {
                    c.handle(d, &mut to_ack)?;
                }
            }
            Err(e) => {
                if attempt == 0 && opts.report_errors {
                    eprintln!("agent-audit collect: {e}; retrying with back-off");
                }
                let delay = backoff(attempt, opts.backoff_initial, opts.backoff_max);
                attempt = attempt.saturating_add(1);
                sleep_unless_stopped(delay, stop);
                if opts.until_idle.is_some_and(|d| last.elapsed() >= d) {
                    break;
                }
            }
        }
        c.commit_ready(&mut to_ack)?;
        if !to_ack.is_empty()
            && let Err(e) = source.ack(std::mem::take(&mut to_ack))
            && opts.report_errors
        {
            eprintln!("agent-audit collect: {e}");
        }
    }
    c.commit_ready(&mut to_ack)?;
    if !to_ack.is_empty()
        && let Err(e) = source.ack(std::mem::take(&mut to_ack))
        && opts.report_errors
    {
        eprintln!("agent-audit collect: {e}");
    }
    c.stats.held = c
        .streams
        .values()
        .map(|s| (s.held.len() + s.ahead.len()) as u64)
        .sum();
    Ok(c.stats)
}

/// One stream's segment files in the central log.
struct Central {
    dir: PathBuf,
    segment: u32,
    len: u64,
    file: fs::File,
    max: u64,
}

fn open_append(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().create(true).append(true).open(path)
}

fn append_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    open_append(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_data()))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

impl Central {
    fn create(dir: &Path, max: u64) -> Result<Central> {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        Central::open(dir, 0, max)
    }

    fn open(dir: &Path, segment: u32, max: u64) -> Result<Central> {
        let path = dir.join(segment_file_name(segment));
        let file = open_append(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
            .len();
        Ok(Central {
            dir: dir.to_path_buf(),
            segment,
            len,
            file,
            max,
        })
    }

    /// Appends whole lines, synced, then replaces head.json with the last
    /// verified checkpoint among them. On a failed write the segment is cut
    /// back, so it only ever holds whole records.
    fn append(&mut self, lines: &[&[u8]], head: Option<&[u8]>) -> Result<()> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.extend_from_slice(l);
            buf.push(b'\n');
        }
        if self.len > 0 && self.len + buf.len() as u64 > self.max {
            self.file
                .sync_data()
                .map_err(|e| Error::io(format!("cannot sync {}", self.dir.display()), e))?;
            *self = Central::open(&self.dir, self.segment.saturating_add(1), self.max)?;
        }
        let before = self.len;
        let written = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(before);
            return Err(Error::io(
                format!("cannot write to {}", self.dir.display()),
                e,
            ));
        }
        self.len += buf.len() as u64;
        if let Some(h) = head {
            write_atomic(&self.dir.join(HEAD_FILE), h)?;
        }
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let w = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        fs::rename(&tmp, path)
    };
    w().map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

struct Held<A> {
    line: Vec<u8>,
    ack: A,
    /// A checkpoint whose root and signature verified.
    checkpoint: bool,
}

struct StreamState<A> {
    id: String,
    token: String,
    verifier: StreamVerifier,
    partition: Option<Partition>,
    ended: bool,
    /// Records in the central log.
    committed: u64,
    /// Verified records after them, in seq order.
    held: Vec<Held<A>>,
    /// `held[..covered]` is covered by a verified checkpoint.
    covered: usize,
    /// Records that arrived ahead of a missing one.
    ahead: BTreeMap<u64, Held<A>>,
    central: Option<Central>,
    quarantined: bool,
    dirty: bool,
}

struct Collector<'o, A> {
    opts: &'o CollectOptions,
    verify_opts: VerifyOptions,
    streams: HashMap<String, StreamState<A>>,
    /// Streams already in the central log, by directory name.
    on_disk: HashMap<String, (PathBuf, Partition)>,
    stats: CollectStats,
}

impl<'o, A> Collector<'o, A> {
    fn new(opts: &'o CollectOptions) -> Result<Collector<'o, A>> {
        let out = &opts.out_dir;
        fs::create_dir_all(out)
            .map_err(|e| Error::io(format!("cannot create {}", out.display()), e))?;
        let mut on_disk = HashMap::new();
        for tenant in subdirs(out)? {
            let Some(t) = dir_name(&tenant) else { continue };
            if t == QUARANTINE_DIR {
                continue;
            }
            for class in subdirs(&tenant)? {
                let Some(rc) = dir_name(&class) else { continue };
                for stream in subdirs(&class)? {
                    let Some(id) = dir_name(&stream) else {
                        continue;
                    };
                    let p = Partition {
                        tenant: t.clone(),
                        retention_class: rc.clone(),
                    };
                    on_disk.insert(id, (stream, p));
                }
            }
        }
        Ok(Collector {
            opts,
            verify_opts: VerifyOptions {
                trusted_keys: opts.trusted_keys.clone(),
            },
            streams: HashMap::new(),
            on_disk,
            stats: CollectStats::default(),
        })
    }

    fn quarantine_dir(&self, token: &str) -> PathBuf {
        self.opts.out_dir.join(QUARANTINE_DIR).join(token)
    }

    /// The state of a stream, created on first sight: quarantined before,
    /// rebuilt from the central log, or new.
    fn load_state(&mut self, id: &str) -> Result<StreamState<A>> {
        let token = partition_token(id);
        let mut st = StreamState {
            id: id.to_string(),
            token: token.clone(),
            verifier: StreamVerifier::new(id, &self.verify_opts),
            partition: None,
            ended: false,
            committed: 0,
            held: Vec::new(),
            covered: 0,
            ahead: BTreeMap::new(),
            central: None,
            quarantined: false,
            dirty: false,
        };
        if self.quarantine_dir(&token).join(FINDING_FILE).exists() {
            st.quarantined = true;
            return Ok(st);
        }
        let Some((dir, partition)) = self.on_disk.get(&token).cloned() else {
            return Ok(st);
        };
        let files = StreamFiles::read(&dir)?;
        let lines = files.lines();
        let mut torn = None;
        let mut findings = None;
        for l in &lines {
            if !l.terminated {
                torn = Some((l.segment, l.offset));
                break;
            }
            match st.verifier.push(l.bytes) {
                Ok(a) => st.ended |= a.kind == "stream_end",
                Err(f) => {
                    findings = Some(f);
                    break;
                }
            }
        }
        drop(lines);
        if let Some((seg, off)) = torn
            && let Some(path) = files.segments.get(seg)
        {
            // A collector killed mid-write: cut back to whole records.
            let f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
            f.set_len(off)
                .map_err(|e| Error::io(format!("cannot truncate {}", path.display()), e))?;
        }
        let last_seg = files
            .segments
            .last()
            .and_then(|p| {
                p.file_name()?
                    .to_str()?
                    .strip_prefix("seg-")?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0u32);
        st.central = Some(Central::open(&dir, last_seg, self.opts.segment_max_bytes)?);
        st.partition = Some(partition);
        st.committed = st.verifier.next_seq();
        if let Some(f) = findings {
            let mut sink = Vec::new();
            self.quarantine(
                &mut st,
                f,
                None,
                "the central copy failed re-verification on restart",
                &mut sink,
            )?;
        }
        Ok(st)
    }

    fn handle(&mut self, d: Delivery<A>, to_ack: &mut Vec<A>) -> Result<()> {
        self.stats.received += 1;
        let info = record_info(&d.payload);
        let id = info
            .as_ref()
            .and_then(|i| i.stream_id.clone())
            .or(d.stream_hint)
            .unwrap_or_else(|| "_unattributed".into());
        let seq = info.as_ref().and_then(|i| i.seq).or(d.seq_hint);
        let mut st = match self.streams.remove(&id) {
            Some(st) => st,
            None => {
                self.stats.streams += 1;
                self.load_state(&id)?
            }
        };
        let held = Held {
            line: d.payload,
            ack: d.ack,
            checkpoint: false,
        };
        let r = self.route(&mut st, seq, held, to_ack);
        self.streams.insert(id, st);
        r
    }

    fn route(
        &mut self,
        st: &mut StreamState<A>,
        seq: Option<u64>,
        h: Held<A>,
        to_ack: &mut Vec<A>,
    ) -> Result<()> {
        if st.quarantined {
            self.append_quarantine(st, std::slice::from_ref(&h.line))?;
            self.stats.quarantined_records += 1;
            to_ack.push(h.ack);
            return Ok(());
        }
        let Some(seq) = seq else {
            let f = finding(
                st,
                FindingCode::MalformedRecord,
                None,
                "a record without a readable seq".into(),
            );
            return self.quarantine(st, vec![f], Some(h), "", to_ack);
        };
        let next = st.verifier.next_seq();
        if seq < st.committed {
            // Already in the central log: safe to acknowledge.
            self.stats.duplicates += 1;
            to_ack.push(h.ack);
            return Ok(());
        }
        if seq < next {
            // A copy of a record still held: the held copy's ack will do
            // (this one, unacknowledged, may come again and is dropped then).
            self.stats.duplicates += 1;
            return Ok(());
        }
        if seq > next {
            if st.ahead.len() >= self.opts.max_held_records {
                let f = finding(
                    st,
                    FindingCode::MissingRecords,
                    Some(next),
                    format!(
                        "seq {next} never arrived while {} later records did",
                        st.ahead.len()
                    ),
                );
                return self.quarantine(st, vec![f], Some(h), "", to_ack);
            }
            match st.ahead.entry(seq) {
                std::collections::btree_map::Entry::Occupied(_) => self.stats.duplicates += 1,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(h);
                }
            }
            return Ok(());
        }
        self.accept(st, h, to_ack)?;
        while !st.quarantined {
            let Some(h) = st.ahead.remove(&st.verifier.next_seq()) else {
                break;
            };
            self.accept(st, h, to_ack)?;
        }
        Ok(())
    }

    fn accept(
        &mut self,
        st: &mut StreamState<A>,
        mut h: Held<A>,
        to_ack: &mut Vec<A>,
    ) -> Result<()> {
        match st.verifier.push(&h.line) {
            Ok(a) => {
                if st.partition.is_none()
                    && let Some(p) = record_info(&h.line).and_then(|i| i.partition)
                {
                    st.partition = Some(p);
                }
                st.ended |= a.kind == "stream_end";
                h.checkpoint = a.checkpoint_verified;
                st.held.push(h);
                if a.checkpoint_verified {
                    st.covered = st.held.len();
                }
                st.dirty = true;
                Ok(())
            }
            Err(findings) => self.quarantine(st, findings, Some(h), "", to_ack),
        }
    }

    fn append_quarantine(&self, st: &StreamState<A>, lines: &[Vec<u8>]) -> Result<()> {
        let dir = self.quarantine_dir(&st.token);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(QUARANTINE_RECORDS);
        let mut buf = Vec::new();
        for l in lines {
            buf.extend_from_slice(l);
            buf.push(b'\n');
        }
        let mut f = open_append(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        f.write_all(&buf)
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }

    /// Moves a broken stream's uncommitted records to quarantine with the
    /// verifier's findings; its later records follow them there.
    fn quarantine(
        &mut self,
        st: &mut StreamState<A>,
        findings: Vec<Finding>,
        bad: Option<Held<A>>,
        context: &str,
        to_ack: &mut Vec<A>,
    ) -> Result<()> {
        let first_bad_seq = findings
            .iter()
            .find_map(|f| f.seq)
            .unwrap_or(st.verifier.next_seq());
        // What a verified checkpoint covers is genuine: it goes to the
        // central log; the rest, from the last checkpoint on, does not.
        self.stats.committed += commit_stream(st, self.opts, true, to_ack)?;
        let mut moved: Vec<Held<A>> = st.held.drain(..).collect();
        moved.extend(bad);
        moved.extend(std::mem::take(&mut st.ahead).into_values());
        let lines: Vec<Vec<u8>> = moved.iter().map(|h| h.line.clone()).collect();
        self.append_quarantine(st, &lines)?;
        let report = serde_json::json!({
            "stream_id": st.id,
            "first_bad_seq": first_bad_seq,
            "findings": findings,
            "context": context,
            "committed_records": st.committed,
            "committed_to": st.central.as_ref().map(|c| c.dir.display().to_string()),
            "quarantined_records": lines.len(),
            "quarantined_at": agent_audit::Timestamp::now().to_rfc3339(),
        });
        let text = serde_json::to_vec_pretty(&report)
            .map_err(|e| Error::with_source("cannot serialize a finding", e))?;
        let dir = self.quarantine_dir(&st.token);
        write_atomic(&dir.join(FINDING_FILE), &text)?;
        if self.opts.report_errors {
            let what = findings
                .first()
                .map(|f| format!("{:?} at seq {first_bad_seq}: {}", f.code, f.message))
                .unwrap_or_default();
            eprintln!(
                "agent-audit collect: stream {} quarantined ({what}) in {}",
                st.id,
                dir.display()
            );
        }
        self.stats.quarantined_streams += 1;
        self.stats.quarantined_records += lines.len() as u64;
        to_ack.extend(moved.into_iter().map(|h| h.ack));
        st.quarantined = true;
        st.covered = 0;
        Ok(())
    }

    /// Writes what verified checkpoints cover to the central log.
    fn commit_ready(&mut self, to_ack: &mut Vec<A>) -> Result<()> {
        let opts = self.opts;
        let mut committed = 0u64;
        for st in self.streams.values_mut().filter(|s| s.dirty) {
            committed += commit_stream(st, opts, false, to_ack)?;
        }
        self.stats.committed += committed;
        Ok(())
    }
}

/// Writes what a verified checkpoint covers (all that is held when more
/// than `max_held_records` is) to the central log; `now` writes the
/// covered part even before the partition is known (the stream is about
/// to be quarantined). Returns the number of records written.
fn commit_stream<A>(
    st: &mut StreamState<A>,
    opts: &CollectOptions,
    now: bool,
    to_ack: &mut Vec<A>,
) -> Result<u64> {
    if st.quarantined {
        st.dirty = false;
        return Ok(0);
    }
    let force = st.held.len() >= opts.max_held_records;
    let n = if force { st.held.len() } else { st.covered };
    if n == 0 {
        st.dirty = false;
        return Ok(0);
    }
    let partition = match &st.partition {
        Some(p) => p.clone(),
        None if st.ended || force || now => Partition::unknown(),
        // Wait for the record that names the tenant.
        None => return Ok(0),
    };
    if st.central.is_none() {
        let dir = opts
            .out_dir
            .join(&partition.tenant)
            .join(&partition.retention_class)
            .join(&st.token);
        st.central = Some(Central::create(&dir, opts.segment_max_bytes)?);
        st.partition = Some(partition);
    }
    let head = st
        .covered
        .checked_sub(1)
        .and_then(|i| st.held.get(i))
        .map(|h| h.line.clone());
    if let Some(c) = st.central.as_mut() {
        let lines: Vec<&[u8]> = st.held.iter().take(n).map(|h| h.line.as_slice()).collect();
        c.append(&lines, head.as_deref())?;
        if let Some(key) = &opts.witness_key {
            // Co-signed only once the records are synced, and before they
            // are acknowledged: a witness line never vouches for records
            // the central log could still lose.
            let now = agent_audit::Timestamp::now();
            let mut cosigs = Vec::new();
            for h in st.held.iter().take(n).filter(|h| h.checkpoint) {
                cosigs.extend(
                    agent_audit::witness::cosign(key, &h.line, now)
                        .map_err(|e| Error::with_source("cannot co-sign a checkpoint", e))?,
                );
                cosigs.push(b'\n');
            }
            if !cosigs.is_empty() {
                append_synced(&c.dir.join(WITNESS_FILE), &cosigs)?;
            }
        }
    }
    to_ack.extend(st.held.drain(..n).map(|h| h.ack));
    st.covered = st.covered.saturating_sub(n);
    st.committed += n as u64;
    st.dirty = !st.held.is_empty();
    Ok(n as u64)
}

fn finding(
    st: &StreamState<impl Sized>,
    code: FindingCode,
    seq: Option<u64>,
    message: String,
) -> Finding {
    Finding {
        code,
        severity: code.severity(),
        stream_id: st.id.clone(),
        seq,
        file: None,
        offset: None,
        message,
    }
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd =
        fs::read_dir(dir).map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && dir_name(p).is_some_and(|n| !n.starts_with('.')))
        .collect();
    out.sort();
    Ok(out)
}

fn dir_name(p: &Path) -> Option<String> {
    p.file_name()?.to_str().map(str::to_string)
}
