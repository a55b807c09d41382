//! The log writer: a bounded lock-free queue in front of one background
//! thread that encodes, redacts, chains, checkpoints, signs and writes
//! segment files.
//!
//! The caller's side ([`AuditLog::emit`]) validates a few fields, checks the
//! queue's event and byte bounds and `try_send`s a boxed event: no I/O, no
//! hashing, no lock. When the queue is full the event is counted, never
//! waited for (unless [`Overflow::Block`] is chosen), and the writer records
//! a `gap` with the count once it drains. I/O errors are retried with
//! back-off; a failed write is cut back so the file only ever holds whole
//! records, and what was written before stays valid.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use serde_json::{Map, Value};

use crate::chain::ChainWriter;
use crate::encode::{EncoderSettings, RecordEncoder};
use crate::error::{AuditError, ErrorKind, Result};
use crate::ids::{Timestamp, uuid_v7_at};
use crate::keys::{KeyPair, load_or_create_dev_key};
use crate::payload::PayloadLimits;
use crate::policy::{Alert, AlertHandler, PolicyEngine};
use crate::record::{Body, CaptureMode, Counter, Event, Gap, Principal, StreamEnd, StreamStart};
use crate::redact::{RedactionConfig, Redactor};
use crate::syncer::Syncer;

/// Name of a stream's segment files: `seg-000000.jsonl`, `seg-000001.jsonl` ...
pub fn segment_file_name(index: u32) -> String {
    format!("seg-{index:06}.jsonl")
}

/// `now + timeout`, saturating instead of panicking for a huge timeout
/// (a caller's "wait forever" such as `Duration::MAX`).
pub fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// File holding a stream's latest checkpoint record, replaced atomically.
pub const HEAD_FILE: &str = "head.json";

/// When the writer calls fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch written.
    Always,
    /// At most once per interval, and at every flush.
    Interval(Duration),
    /// Never (the OS decides); flush still writes through to the OS.
    Never,
}

/// What `emit` does when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Count the event as lost and return at once (default).
    Drop,
    /// Wait up to the timeout for room, then count it as lost.
    Block(Duration),
}

/// Where the signing key comes from.
#[derive(Clone, Debug, Default)]
pub enum KeySource {
    /// The log directory's development key, created with a warning.
    #[default]
    Development,
    /// A PKCS#8 PEM file.
    File(PathBuf),
    /// PKCS#8 PEM text.
    Pem(String),
}

/// Settings of one log writer.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Log directory; each writer adds a stream directory under it.
    pub dir: PathBuf,
    /// Signing key.
    pub key: KeySource,
    /// Default principal (tenant, agent ...).
    pub principal: Principal,
    /// Default retention class.
    pub retention_class: String,
    /// Policy version stamped on every event.
    pub policy_version: Option<String>,
    /// Default capture mode.
    pub capture: CaptureMode,
    /// Tenant hashing key: keyed hashes and redaction tokens.
    pub hashing_key: Option<Vec<u8>>,
    /// Store user ids as keyed hashes.
    pub hash_user_ids: bool,
    /// Redaction patterns and allow-lists.
    pub redaction: RedactionConfig,
    /// Payload bounds.
    pub limits: PayloadLimits,
    /// Queue bound in events.
    pub queue_capacity: usize,
    /// Queue bound in bytes of memory the queued events hold (estimated
    /// by [`Event::approx_bytes`]): what the log may use while its disk
    /// or sink is down.
    pub queue_max_bytes: usize,
    /// Full-queue behaviour.
    pub overflow: Overflow,
    /// Checkpoint after this many records.
    pub checkpoint_every: u64,
    /// ... or after this long with unsigned records.
    pub checkpoint_interval: Duration,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Rotate segment files past this size.
    pub segment_max_bytes: u64,
    /// Sign every record (`sig`), not just checkpoints.
    pub sign_records: bool,
    /// The policy judging every event (the built-in pack by default).
    pub policy: PolicySource,
}

/// Which policy a log applies.
#[derive(Clone, Debug, Default)]
pub enum PolicySource {
    /// The built-in rule pack.
    #[default]
    Builtin,
    /// No policy: no flags, no verdicts.
    Off,
    /// A loaded policy (from a file or text).
    Engine(Arc<PolicyEngine>),
}

impl LogConfig {
    /// Defaults for a log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            key: KeySource::Development,
            principal: Principal::default(),
            retention_class: "standard_7y".into(),
            policy_version: None,
            capture: CaptureMode::Redacted,
            hashing_key: None,
            hash_user_ids: false,
            redaction: RedactionConfig::default(),
            limits: PayloadLimits::default(),
            queue_capacity: 65_536,
            queue_max_bytes: 16 * 1024 * 1024,
            overflow: Overflow::Drop,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(1),
            fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
            segment_max_bytes: 64 * 1024 * 1024,
            sign_records: false,
            policy: PolicySource::Builtin,
        }
    }
}

/// Why a stream was closed, written in `stream_end.reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// An explicit `shutdown()` call.
    Shutdown,
    /// The process is exiting (atexit, beforeExit, exit hooks).
    Exit,
    /// A termination signal (SIGTERM, SIGINT).
    Signal,
}

impl ShutdownReason {
    /// The `stream_end.reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownReason::Shutdown => "shutdown",
            ShutdownReason::Exit => "exit",
            ShutdownReason::Signal => "signal",
        }
    }

    /// Parses `shutdown` | `exit` | `signal`.
    pub fn parse(s: &str) -> Option<ShutdownReason> {
        [
            ShutdownReason::Shutdown,
            ShutdownReason::Exit,
            ShutdownReason::Signal,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Counters of a writer, read without stopping it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records written (including the writer's own records).
    pub written: u64,
    /// Events lost (queue full, byte bound, closed, unencodable).
    pub dropped: u64,
    /// Events waiting in the queue.
    pub queued: u64,
    /// Approximate bytes waiting in the queue.
    pub queued_bytes: u64,
    /// Bytes written to segment files.
    pub bytes_written: u64,
    /// I/O errors met (each retried).
    pub io_errors: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
}

/// An event the writer thread builds from parts a caller hands over.
///
/// For a caller on a hot path that holds an event's parts cheaply (a
/// tool's fixed fields made once, one call's times, ids and primitive
/// arguments): building the [`Event`] allocates its strings, maps and
/// payload, and an event built on the caller's thread is freed on the
/// writer's, which costs the caller more than the building. A source is
/// one allocation; the writer builds, writes and frees the event.
pub trait EventSource: Send {
    /// A rough size in memory of the source and the event it builds (as
    /// [`Event::approx_bytes`]), for the queue's byte bound.
    fn approx_bytes(&self) -> usize;
    /// The event, on the writer thread. It must pass [`Event::validate`]:
    /// one that does not, or a `build` that panics, is counted as lost and
    /// recorded in a `gap` (reason `invalid_event`).
    fn build(self: Box<Self>) -> Event;
}

enum Msg {
    Event(Box<Event>, usize),
    Source(Box<dyn EventSource>, usize),
    Flush(Sender<bool>),
    Shutdown(Sender<bool>, &'static str),
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped_total: AtomicU64,
    // Lost to the event bound, not yet recorded in a `gap`.
    dropped_pending: AtomicU64,
    // Lost to the byte bound, not yet recorded in a `gap`.
    dropped_pending_bytes: AtomicU64,
    queued_bytes: AtomicUsize,
    bytes_written: AtomicU64,
    io_errors: AtomicU64,
    checkpoints: AtomicU64,
}

struct Shared {
    tx: Sender<Msg>,
    counters: Arc<Counters>,
    closed: AtomicBool,
    stop_retrying: Arc<AtomicBool>,
    max_bytes: usize,
    overflow: Overflow,
    stream_id: String,
    stream_dir: PathBuf,
    key_id: String,
    thread: Mutex<Option<JoinHandle<()>>>,
    policy: Option<Arc<PolicyEngine>>,
    alert_handler: Arc<Mutex<Option<AlertHandler>>>,
}

/// A handle to one log writer. Cheap to clone; all clones share the
/// writer. Dropping the last handle does not flush: call [`shutdown`].
///
/// [`shutdown`]: AuditLog::shutdown
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.shared.stream_id)
    }
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

impl AuditLog {
    /// Opens a new stream in `config.dir` and starts its writer thread.
    /// Fails on a bad configuration or key, or if the directory or the
    /// stream's first records cannot be written.
    pub fn open(config: LogConfig) -> Result<AuditLog> {
        if config.queue_capacity == 0 || config.checkpoint_every == 0 {
            return Err(AuditError::config(
                "queue_capacity and checkpoint_every must be at least 1",
            ));
        }
        fs::create_dir_all(&config.dir).map_err(|e| {
            AuditError::io(
                format!("cannot create log directory {}", config.dir.display()),
                e,
            )
        })?;
        let key = match &config.key {
            KeySource::Development => load_or_create_dev_key(&config.dir)?.0,
            KeySource::File(p) => KeyPair::load(p)?,
            KeySource::Pem(pem) => KeyPair::from_pem(pem)?,
        };
        let key = Arc::new(key);
        let redactor = Arc::new(Redactor::new(config.redaction.clone())?);
        let policy = match &config.policy {
            PolicySource::Builtin => Some(Arc::new(PolicyEngine::builtin()?)),
            PolicySource::Off => None,
            PolicySource::Engine(p) => Some(p.clone()),
        };
        let policy_version = config
            .policy_version
            .clone()
            .or_else(|| policy.as_ref().map(|p| p.version().to_string()));
        let encoder = RecordEncoder::new(
            EncoderSettings {
                principal: config.principal.clone(),
                retention_class: config.retention_class.clone(),
                policy_version,
                capture: config.capture,
                hash_user_ids: config.hash_user_ids,
                limits: config.limits.clone(),
            },
            redactor,
            config.hashing_key.as_deref(),
        )?;

        let now = Timestamp::now();
        let stream_id = uuid_v7_at(now).to_string();
        let stream_dir = config.dir.join(&stream_id);
        fs::create_dir(&stream_dir).map_err(|e| {
            AuditError::io(
                format!("cannot create stream directory {}", stream_dir.display()),
                e,
            )
        })?;
        let segment = Segment::create(&stream_dir, 0)?;
        let mut chain = ChainWriter::new(stream_id.clone(), key.clone(), config.sign_records);
        // Each batch's record signatures are made together, on two threads,
        // just before the batch is written (`write_pending`).
        chain.defer_signatures(true);

        let counters = Arc::new(Counters::default());
        let (tx, rx) = bounded(config.queue_capacity);
        let stop_retrying = Arc::new(AtomicBool::new(false));
        let syncer = {
            let counters = counters.clone();
            Syncer::start(move |_| {
                counters.io_errors.fetch_add(1, Ordering::Relaxed);
            })?
        };
        let mut writer = Writer {
            rx,
            chain,
            encoder,
            envelope: crate::envelope::Envelope::new(),
            segment,
            stream_dir: stream_dir.clone(),
            counters: counters.clone(),
            stop_retrying: stop_retrying.clone(),
            pending: Vec::with_capacity(1 << 20),
            pending_records: 0,
            pending_checkpoint: None,
            checkpoint_every: config.checkpoint_every,
            checkpoint_interval: config.checkpoint_interval,
            fsync: config.fsync,
            segment_max_bytes: config.segment_max_bytes,
            last_checkpoint: Instant::now(),
            last_sync: Instant::now(),
            unsynced_bytes: 0,
            lost_unencodable: 0,
            policy: None,
            alerts: None,
            syncer,
        };
        let mut settings = Map::new();
        settings.insert(
            "checkpoint_every".into(),
            Value::from(config.checkpoint_every),
        );
        settings.insert(
            "checkpoint_interval_ms".into(),
            Value::from(config.checkpoint_interval.as_millis() as u64),
        );
        settings.insert(
            "fsync".into(),
            Value::String(match config.fsync {
                FsyncPolicy::Always => "always".into(),
                FsyncPolicy::Interval(d) => format!("{}ms", d.as_millis()),
                FsyncPolicy::Never => "never".into(),
            }),
        );
        settings.insert("sign_records".into(), Value::Bool(config.sign_records));
        let start = Body::StreamStart(StreamStart {
            writer_id: uuid_v7_at(now).to_string(),
            writer: format!("agent-audit-rs/{}", env!("CARGO_PKG_VERSION")),
            host: host_name(),
            pid: std::process::id(),
            alg: "ed25519".into(),
            key_id: key.key_id().to_string(),
            public_key: key.public().to_hex(),
            settings,
        });
        // The stream's opening is written synchronously so a bad directory
        // fails `open`, not some later flush.
        writer.seal_writer_record(&start, now)?;
        writer.checkpoint()?;
        writer.write_pending()?;
        writer.sync()?;
        writer.write_head()?;

        let alert_handler: Arc<Mutex<Option<AlertHandler>>> = Arc::new(Mutex::new(None));
        if policy.is_some() {
            writer.alerts = Some(spawn_alert_thread(alert_handler.clone())?);
        }
        writer.policy = policy.clone();
        let thread = std::thread::Builder::new()
            .name("agent-audit-writer".into())
            // Dropping a deeply nested value recurses; give it room.
            .stack_size(64 * 1024 * 1024)
            .spawn(move || writer.run())
            .map_err(|e| AuditError::io("cannot start the writer thread", e))?;

        Ok(AuditLog {
            shared: Arc::new(Shared {
                tx,
                counters,
                closed: AtomicBool::new(false),
                stop_retrying,
                max_bytes: config.queue_max_bytes,
                overflow: config.overflow,
                stream_id,
                stream_dir,
                key_id: key.key_id().to_string(),
                thread: Mutex::new(Some(thread)),
                policy,
                alert_handler,
            }),
        })
    }

    /// The stream this writer writes.
    pub fn stream_id(&self) -> &str {
        &self.shared.stream_id
    }

    /// The stream's directory.
    pub fn stream_dir(&self) -> &Path {
        &self.shared.stream_dir
    }

    /// Id of the signing key.
    pub fn key_id(&self) -> &str {
        &self.shared.key_id
    }

    /// The policy this log applies, for the caller-thread check before a
    /// tool runs ([`PolicyEngine::gate`], [`PolicyEngine::pre_check`]).
    pub fn policy(&self) -> Option<&Arc<PolicyEngine>> {
        self.shared.policy.as_ref()
    }

    /// Sets the function called for each `alert` verdict. It runs on a
    /// thread of its own, never on the agent's or the writer's; alerts that
    /// arrive faster than it returns are dropped past a bound of 1,024.
    pub fn set_alert_handler(&self, handler: Option<AlertHandler>) {
        if let Ok(mut h) = self.shared.alert_handler.lock() {
            *h = handler;
        }
    }

    /// Queues an event. `Ok(true)` when queued, `Ok(false)` when it was
    /// lost to a full queue (counted and recorded as a `gap`), `Err` when
    /// the event is invalid or the log is shut down (API misuse).
    pub fn emit(&self, event: Event) -> Result<bool> {
        event.validate()?;
        let size = event.approx_bytes();
        self.enqueue(size, || Msg::Event(Box::new(event), size))
    }

    /// Queues an event that the writer thread builds (see [`EventSource`]),
    /// as [`emit`](Self::emit) queues a built one: `Ok(false)` when the
    /// queue was full, an error when the log is shut down. The source is
    /// responsible for the event's validity; the writer checks it again.
    pub fn emit_source(&self, source: Box<dyn EventSource>) -> Result<bool> {
        let size = source.approx_bytes();
        self.enqueue(size, || Msg::Source(source, size))
    }

    fn enqueue(&self, size: usize, msg: impl FnOnce() -> Msg) -> Result<bool> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(AuditError::new(
                ErrorKind::Closed,
                "the audit log is shut down",
            ));
        }
        let c = &self.shared.counters;
        if !self.reserve_bytes(size) {
            c.dropped_total.fetch_add(1, Ordering::Relaxed);
            c.dropped_pending_bytes.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let msg = msg();
        let sent = match self.shared.overflow {
            Overflow::Drop => match self.shared.tx.try_send(msg) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            Overflow::Block(t) => self.shared.tx.send_timeout(msg, t).is_ok(),
        };
        if !sent {
            c.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.count_lost();
        }
        Ok(sent)
    }

    /// Takes `size` bytes of the queue's byte bound. An event bigger than
    /// the whole bound still goes in when the queue is empty, so one huge
    /// payload is not lost forever. When full: `Drop` gives up at once;
    /// `Block` waits for the writer to make room, up to its timeout.
    fn reserve_bytes(&self, size: usize) -> bool {
        let c = &self.shared.counters;
        let max = self.shared.max_bytes;
        let try_take = || {
            let before = c.queued_bytes.fetch_add(size, Ordering::AcqRel);
            if before == 0 || before + size <= max {
                return true;
            }
            c.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            false
        };
        if try_take() {
            return true;
        }
        let Overflow::Block(timeout) = self.shared.overflow else {
            return false;
        };
        let deadline = deadline_after(timeout);
        while Instant::now() < deadline {
            if self.shared.closed.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
            if try_take() {
                return true;
            }
        }
        false
    }

    fn count_lost(&self) {
        let c = &self.shared.counters;
        c.dropped_total.fetch_add(1, Ordering::Relaxed);
        c.dropped_pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes everything queued so far, checkpoints and syncs it. Returns
    /// `false` if that did not finish within `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        if self.shared.closed.load(Ordering::Acquire) {
            return true;
        }
        let deadline = deadline_after(timeout);
        let (ack_tx, ack_rx) = bounded(1);
        if self
            .shared
            .tx
            .send_timeout(Msg::Flush(ack_tx), timeout)
            .is_err()
        {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ack_rx.recv_timeout(left).unwrap_or(false)
    }

    /// Writes everything queued, closes the stream with `stream_end` and a
    /// final checkpoint, and stops the writer. Later `emit`s fail with
    /// `Closed`. Returns `false` if it did not finish within `timeout`.
    /// Idempotent.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.shutdown_with_reason(timeout, ShutdownReason::Shutdown)
    }

    /// [`shutdown`](AuditLog::shutdown), recording why the stream closed
    /// (an exit hook or a signal handler says so in `stream_end.reason`).
    pub fn shutdown_with_reason(&self, timeout: Duration, reason: ShutdownReason) -> bool {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return true;
        }
        let deadline = deadline_after(timeout);
        let (ack_tx, ack_rx) = bounded(1);
        if self
            .shared
            .tx
            .send_timeout(Msg::Shutdown(ack_tx, reason.as_str()), timeout)
            .is_err()
        {
            self.shared.stop_retrying.store(true, Ordering::Release);
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let ok = ack_rx.recv_timeout(left).unwrap_or(false);
        if ok {
            if let Ok(mut t) = self.shared.thread.lock()
                && let Some(handle) = t.take()
            {
                let _ = handle.join();
            }
        } else {
            self.shared.stop_retrying.store(true, Ordering::Release);
        }
        ok
    }

    /// Whether `shutdown` has been called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped_total.load(Ordering::Relaxed),
            queued: self.shared.tx.len() as u64,
            queued_bytes: c.queued_bytes.load(Ordering::Relaxed) as u64,
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            io_errors: c.io_errors.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
        }
    }
}

/// One open segment file. `committed` is the length that holds only whole
/// records; a failed write is cut back to it.
struct Segment {
    index: u32,
    path: PathBuf,
    file: File,
    committed: u64,
}

impl Segment {
    fn create(stream_dir: &Path, index: u32) -> Result<Segment> {
        let path = stream_dir.join(segment_file_name(index));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::io(format!("cannot create segment {}", path.display()), e))?;
        Ok(Segment {
            index,
            path,
            file,
            committed: 0,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.committed += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut a partial write back so the file never holds a torn
                // record followed by good ones.
                let _ = self.file.set_len(self.committed);
                Err(e)
            }
        }
    }
}

struct Writer {
    rx: Receiver<Msg>,
    chain: ChainWriter,
    encoder: RecordEncoder,
    // Reused for every record's envelope.
    envelope: crate::envelope::Envelope,
    segment: Segment,
    stream_dir: PathBuf,
    counters: Arc<Counters>,
    stop_retrying: Arc<AtomicBool>,
    // Sealed lines not yet in the file, and how many records they hold.
    pending: Vec<u8>,
    pending_records: u64,
    // The last checkpoint line sealed, for head.json once it is written.
    pending_checkpoint: Option<Vec<u8>>,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    fsync: FsyncPolicy,
    segment_max_bytes: u64,
    last_checkpoint: Instant,
    last_sync: Instant,
    // Bytes written since the last sync asked for (0: nothing to sync).
    unsynced_bytes: u64,
    lost_unencodable: u64,
    policy: Option<Arc<PolicyEngine>>,
    alerts: Option<Sender<Alert>>,
    // Interval syncs and rotated-out segments are synced there.
    syncer: Syncer,
}

fn spawn_alert_thread(handler: Arc<Mutex<Option<AlertHandler>>>) -> Result<Sender<Alert>> {
    let (tx, rx) = bounded::<Alert>(1024);
    std::thread::Builder::new()
        .name("agent-audit-alerts".into())
        .spawn(move || {
            // Ends when the writer (the only sender) is gone.
            for alert in rx {
                let h = handler.lock().ok().and_then(|h| h.clone());
                if let Some(h) = h {
                    h(&alert);
                }
            }
        })
        .map_err(|e| AuditError::io("cannot start the alert thread", e))?;
    Ok(tx)
}

// Small batches keep what a crash can lose, and the memory held, small;
// larger ones buy little once a batch is a single write call.
const BATCH_MAX_EVENTS: usize = 1024;
/// How long the writer waits after a batch before it waits on the queue
/// again (see `Writer::run`); bounds the extra latency of a flush.
const LINGER: Duration = Duration::from_millis(1);
const BATCH_MAX_BYTES: usize = 1 << 20;
/// How long `flush` and `shutdown` wait on the fsync thread, as an inline
/// sync of a slow disk would have.
const SYNC_WAIT: Duration = Duration::from_secs(120);
/// Bytes written after which an interval sync comes early (see
/// `Writer::maybe_sync`).
const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// Length of the longest run of whole lines at the start of `buf` that
/// fits in `room` bytes.
fn fitting_prefix(buf: &[u8], room: u64) -> usize {
    let limit = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
    match buf
        .get(..limit)
        .and_then(|b| b.iter().rposition(|c| *c == b'\n'))
    {
        Some(i) => i + 1,
        None => 0,
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let wait = self.next_wake();
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
                    if self.handle(msg) {
                        return;
                    }
                    // Linger before waiting on the queue again: an agent
                    // emitting steadily then finds the writer awake, so a
                    // send costs no wake-up (a futex syscall each, several
                    // microseconds on the caller's thread), and batches
                    // grow. An idle writer still parks after one linger.
                    // A batch cut short by its size limit leaves work
                    // queued: no linger then, or a writer behind a fast
                    // producer would sleep 1 ms every ~1,000 records.
                    if self.rx.is_empty() {
                        std::thread::sleep(LINGER);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.on_timer();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle is gone without a shutdown: close anyway.
                    let _ = self.close("dropped");
                    return;
                }
            }
        }
    }

    fn next_wake(&self) -> Duration {
        let mut wait = Duration::from_secs(3600);
        if self.chain.since_checkpoint() > 0 {
            wait = wait.min(
                self.checkpoint_interval
                    .saturating_sub(self.last_checkpoint.elapsed()),
            );
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && self.unsynced_bytes > 0
        {
            wait = wait.min(d.saturating_sub(self.last_sync.elapsed()));
        }
        wait.max(Duration::from_millis(1))
    }

    /// Handles one message and drains what else is queued; true = stop.
    fn handle(&mut self, first: Msg) -> bool {
        let mut msg = Some(first);
        let mut n = 0;
        while let Some(m) = msg.take() {
            match m {
                Msg::Event(..) | Msg::Source(..) => {
                    self.take_event(m);
                    n += 1;
                    if self.chain.since_checkpoint() >= self.checkpoint_every {
                        self.checkpoint_or_count();
                    }
                }
                Msg::Flush(ack) => {
                    let ok = self.flush_all();
                    let _ = ack.send(ok);
                }
                Msg::Shutdown(ack, reason) => {
                    let ok = self.close(reason).is_ok();
                    let _ = ack.send(ok);
                    return true;
                }
            }
            if n < BATCH_MAX_EVENTS && self.pending.len() < BATCH_MAX_BYTES {
                msg = self.rx.try_recv().ok();
            }
        }
        self.write_pending_retrying();
        self.maybe_sync();
        if self.last_checkpoint.elapsed() >= self.checkpoint_interval
            && self.chain.since_checkpoint() > 0
        {
            self.checkpoint_or_count();
            self.write_pending_retrying();
        }
        false
    }

    fn on_timer(&mut self) {
        self.record_gap_if_any();
        if self.chain.since_checkpoint() > 0
            && self.last_checkpoint.elapsed() >= self.checkpoint_interval
        {
            self.checkpoint_or_count();
        }
        self.write_pending_retrying();
        self.maybe_sync();
    }

    fn record_gap_if_any(&mut self) {
        let counters = self.counters.clone();
        for (counter, reason) in [
            (&counters.dropped_pending, "queue_full"),
            (&counters.dropped_pending_bytes, "queue_bytes"),
        ] {
            let lost = counter.swap(0, Ordering::AcqRel);
            if lost > 0 {
                let body = Body::Gap(Gap {
                    lost: Counter(lost),
                    reason: reason.into(),
                });
                self.seal_or_count(&body);
            }
        }
        if self.lost_unencodable > 0 {
            let body = Body::Gap(Gap {
                lost: Counter(self.lost_unencodable),
                reason: "invalid_event".into(),
            });
            self.lost_unencodable = 0;
            self.seal_or_count(&body);
        }
    }

    fn seal_or_count(&mut self, body: &Body) {
        if self.seal_writer_record(body, Timestamp::now()).is_err() {
            self.counters.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes a queued event (building it first when a source was queued)
    /// and gives its bytes back to the queue's bound.
    fn take_event(&mut self, msg: Msg) {
        let (event, size) = match msg {
            Msg::Event(e, size) => (Some(*e), size),
            Msg::Source(source, size) => {
                // The caller's code, on this thread: a panic in it loses
                // that event, not the writer.
                let built =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| source.build()));
                (built.ok().filter(|e| e.validate().is_ok()), size)
            }
            Msg::Flush(_) | Msg::Shutdown(..) => return,
        };
        self.record_gap_if_any();
        match event {
            Some(event) => self.encode_event(event),
            None => {
                self.counters.dropped_total.fetch_add(1, Ordering::Relaxed);
                self.lost_unencodable += 1;
            }
        }
        self.counters.queued_bytes.fetch_sub(size, Ordering::AcqRel);
    }

    fn encode_event(&mut self, mut event: Event) {
        let verdicts = match &self.policy {
            Some(p) => p.observe(&mut event),
            None => Vec::new(),
        };
        if verdicts.is_empty() {
            return self.encode_one(event);
        }
        let followers: Vec<Event> = verdicts
            .iter()
            .map(|v| PolicyEngine::verdict_event(v, &event))
            .collect();
        if let Some(tx) = &self.alerts {
            for v in verdicts
                .iter()
                .filter(|v| v.effect.action == crate::policy::Action::Alert)
            {
                let _ = tx.try_send(Alert::new(v, &event));
            }
        }
        self.encode_one(event);
        for f in followers {
            self.encode_one(f);
        }
    }

    fn encode_one(&mut self, event: Event) {
        let sealed = self
            .encoder
            .encode(event, &mut self.envelope)
            .and_then(|()| {
                self.chain.seal_envelope(
                    &mut self.envelope,
                    self.encoder.payload(),
                    &mut self.pending,
                )
            });
        if sealed.is_ok() {
            self.pending_records += 1;
        } else {
            // Only a value the encoder cannot canonicalize gets here; it is
            // counted and recorded as a gap, never silently skipped.
            self.counters.dropped_total.fetch_add(1, Ordering::Relaxed);
            self.lost_unencodable += 1;
        }
    }

    fn seal_writer_record(&mut self, body: &Body, ts: Timestamp) -> Result<()> {
        let env = crate::chain::writer_envelope(body, ts)?;
        self.envelope.clear();
        self.envelope.extend_map(env)?;
        self.chain
            .seal_envelope(&mut self.envelope, None, &mut self.pending)?;
        self.pending_records += 1;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<()> {
        let start = self.pending.len();
        self.chain.checkpoint(Timestamp::now(), &mut self.pending)?;
        self.pending_records += 1;
        self.pending_checkpoint = self.pending.get(start..).map(<[u8]>::to_vec);
        self.last_checkpoint = Instant::now();
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn checkpoint_or_count(&mut self) {
        if self.checkpoint().is_err() {
            self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes the pending lines once, rotating segments at line
    /// boundaries; on error what is unwritten stays pending.
    fn write_pending(&mut self) -> Result<()> {
        self.chain.sign_owed(&mut self.pending);
        while !self.pending.is_empty() {
            let room = self
                .segment_max_bytes
                .saturating_sub(self.segment.committed);
            let mut take = fitting_prefix(&self.pending, room);
            if take == 0 {
                if self.segment.committed > 0 {
                    self.rotate()?;
                    continue;
                }
                // A single record bigger than a segment gets a segment of its own.
                take = fitting_prefix(&self.pending, u64::MAX);
            }
            let chunk = self.pending.get(..take).unwrap_or_default();
            self.segment.append(chunk).map_err(|e| {
                AuditError::io(format!("cannot write {}", self.segment.path.display()), e)
            })?;
            let records = if take == self.pending.len() {
                self.pending_records
            } else {
                chunk.iter().filter(|b| **b == b'\n').count() as u64
            };
            self.pending_records -= records.min(self.pending_records);
            self.counters.written.fetch_add(records, Ordering::Relaxed);
            self.counters
                .bytes_written
                .fetch_add(take as u64, Ordering::Relaxed);
            self.pending.drain(..take);
            self.unsynced_bytes += take as u64;
        }
        if self.fsync == FsyncPolicy::Always {
            self.sync()?;
        }
        if self.pending_checkpoint.is_some() {
            self.write_head()?;
        }
        Ok(())
    }

    /// Writes the pending lines, retrying with back-off on I/O errors
    /// until they are written or shutdown gives up.
    fn write_pending_retrying(&mut self) {
        let mut backoff = Duration::from_millis(5);
        loop {
            match self.write_pending() {
                Ok(()) => return,
                Err(_) => {
                    self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
                    if self.stop_retrying.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn rotate(&mut self) -> Result<()> {
        let next = Segment::create(&self.stream_dir, self.segment.index + 1)?;
        let old = std::mem::replace(&mut self.segment, next);
        if !matches!(self.fsync, FsyncPolicy::Interval(_)) {
            // Always: synced after its last write already. Never: left to the OS.
            return Ok(());
        }
        // The full segment is synced on the fsync thread, before any later
        // sync of the new one; inline only when that thread is behind.
        if let Ok(file) = old.file.try_clone()
            && self.syncer.sync_later(file, old.path.clone())
        {
            return Ok(());
        }
        old.file
            .sync_data()
            .map_err(|e| AuditError::io(format!("cannot sync {}", old.path.display()), e))
    }

    /// A sync of everything written so far was made or asked for.
    fn mark_synced(&mut self) {
        self.last_sync = Instant::now();
        self.unsynced_bytes = 0;
    }

    fn sync(&mut self) -> Result<()> {
        self.segment.file.sync_data().map_err(|e| {
            AuditError::io(format!("cannot sync {}", self.segment.path.display()), e)
        })?;
        self.mark_synced();
        Ok(())
    }

    /// The interval sync, handed to the fsync thread; when that is still
    /// busy, tried again on a later wake-up. Also every `SYNC_EVERY_BYTES`
    /// written: on ext4 a sync holds up writes to the file system (the
    /// writer's included) for as long as it takes, so many small syncs
    /// stall the writer less than one of everything written in a second.
    fn maybe_sync(&mut self) {
        let FsyncPolicy::Interval(d) = self.fsync else {
            return;
        };
        if self.unsynced_bytes == 0
            || (self.last_sync.elapsed() < d && self.unsynced_bytes < SYNC_EVERY_BYTES)
        {
            return;
        }
        match self.segment.file.try_clone() {
            Ok(file) => {
                if self.syncer.sync_later(file, self.segment.path.clone()) {
                    self.mark_synced();
                }
            }
            Err(_) => {
                self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Syncs the open segment after every sync handed off before, and
    /// waits: what `flush` and the end of a stream promise.
    fn sync_all(&mut self) -> Result<()> {
        let file = self.segment.file.try_clone().map_err(|e| {
            AuditError::io(format!("cannot sync {}", self.segment.path.display()), e)
        })?;
        if !self
            .syncer
            .sync_now(file, self.segment.path.clone(), SYNC_WAIT)
        {
            return Err(AuditError::new(
                ErrorKind::Io,
                format!(
                    "cannot sync {} (or a segment before it)",
                    self.segment.path.display()
                ),
            ));
        }
        self.mark_synced();
        Ok(())
    }

    /// Replaces head.json with the last checkpoint written, so a verifier
    /// can tell a cut tail from a crash.
    fn write_head(&mut self) -> Result<()> {
        let Some(line) = self.pending_checkpoint.take() else {
            return Ok(());
        };
        let tmp = self.stream_dir.join(".head.json.tmp");
        let head = self.stream_dir.join(HEAD_FILE);
        let result = fs::write(&tmp, &line).and_then(|_| fs::rename(&tmp, &head));
        if let Err(e) = result {
            self.pending_checkpoint = Some(line);
            return Err(AuditError::io(
                format!("cannot write {}", head.display()),
                e,
            ));
        }
        Ok(())
    }

    fn flush_all(&mut self) -> bool {
        self.record_gap_if_any();
        if self.chain.since_checkpoint() > 0 {
            self.checkpoint_or_count();
        }
        self.write_pending_retrying();
        let synced = self.fsync == FsyncPolicy::Never || self.sync_all().is_ok();
        synced && self.pending.is_empty()
    }

    fn close(&mut self, reason: &str) -> Result<()> {
        // Drain what is still queued first.
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Event(..) | Msg::Source(..) => self.take_event(msg),
                Msg::Flush(ack) | Msg::Shutdown(ack, _) => {
                    let _ = ack.send(true);
                }
            }
        }
        self.record_gap_if_any();
        let end = Body::StreamEnd(StreamEnd {
            records: Counter(self.chain.next_seq()),
            lost: Counter(self.counters.dropped_total.load(Ordering::Relaxed)),
            reason: reason.into(),
        });
        self.seal_writer_record(&end, Timestamp::now())?;
        self.checkpoint()?;
        self.write_pending_retrying();
        if !self.pending.is_empty() {
            return Err(AuditError::new(
                ErrorKind::Io,
                "could not write the end of the stream",
            ));
        }
        self.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_timeout_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert!(deadline_after(Duration::MAX) > now + Duration::from_secs(3600));
        let d = deadline_after(Duration::from_millis(5));
        assert!(d >= now + Duration::from_millis(5) && d < now + Duration::from_secs(5));
    }
}
