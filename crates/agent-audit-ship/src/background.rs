//! An exporter inside the agent's process: [`ship::ship`](crate::ship::ship)
//! on a named, low-priority background thread, started next to the log
//! writer (e.g. by `init`) and stopped with a bounded wait.
//!
//! The exporter only reads the local log, which stays the write-ahead
//! log: the agent's calls never wait for it, and a broker that is down or
//! unreachable delays export, it does not fail or slow an `emit`. What is
//! not shipped when the agent exits stays in the log directory with the
//! exporter's cursor, and is shipped by the next exporter on that
//! directory (the next run, or an `agent-audit ship` sidecar).
//!
//! ```no_run
//! # fn main() -> agent_audit_ship::Result<()> {
//! use std::time::Duration;
//! use agent_audit_ship::ShipOptions;
//! use agent_audit_ship::background::{ExportTarget, spawn_exporter};
//!
//! // After AuditLog::open(config) has created the log directory:
//! let exporter = spawn_exporter(
//!     "./audit",
//!     ExportTarget::url("nats://127.0.0.1:4222")?,
//!     ShipOptions::default(),
//! )?;
//! // ... the agent runs; exporter.stats() says how export is doing ...
//! // On shutdown, after the log's own shutdown(timeout):
//! exporter.drain(Duration::from_secs(2)); // ship the tail, bounded
//! # Ok(()) }
//! ```
//!
//! Several processes may share one log directory: each exporter takes an
//! advisory lock, `LOG/.ship-lock.<name>`, and only its holder ships (it
//! follows every stream in the directory); the others stand by and take
//! over when the holder's process ends.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::exporter::{ExportFailure, Exporter, Outgoing};
use crate::nats::{NatsConfig, NatsExporter};
use crate::otlp::{OtlpConfig, OtlpExporter};
use crate::record::partition_token;
use crate::ship::{ShipOptions, backoff, ship, sleep_unless_stopped};

/// The exporter thread's name.
pub const THREAD_NAME: &str = "agent-audit-export";

/// How much the exporter thread's nice value is raised (Linux), so the
/// agent's threads and the log writer go first on a busy machine. Threads
/// the exporter starts (the NATS client's runtime) inherit it.
pub const NICE_INCREMENT: i32 = 10;

/// How long a shutdown's drain waits while the receiver is known to be
/// unreachable (see [`ExporterHandle::drain_at_shutdown`]).
pub const UNREACHABLE_DRAIN: Duration = Duration::from_millis(500);

/// How long dropping an [`ExporterHandle`] waits for its thread.
pub const DROP_TIMEOUT: Duration = Duration::from_secs(1);

/// An exporter described by a URL; built on the exporter thread, so that
/// connecting never runs on the caller's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ExporterConfig {
    /// NATS JetStream, `nats://HOST:PORT`.
    Nats(NatsConfig),
    /// OTLP/HTTP (protobuf), `http(s)://HOST:PORT` (an OpenTelemetry
    /// collector's OTLP/HTTP receiver).
    Otlp(OtlpConfig),
}

impl ExporterConfig {
    /// Parses an exporter URL: `nats://HOST:PORT` (NATS JetStream).
    /// The scheme picks the exporter; an unknown scheme or a malformed
    /// address is an error here, not later on the thread.
    pub fn from_url(url: &str) -> Result<ExporterConfig> {
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "nats" | "tls" => {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| Error::with_source(format!("bad NATS URL {url}"), e))?;
                Ok(ExporterConfig::Nats(NatsConfig::new(url)))
            }
            "http" | "https" => {
                // Validated here (the same checks the exporter makes), so a
                // bad endpoint fails init rather than the thread.
                let cfg = OtlpConfig::new(url);
                OtlpExporter::new(cfg.clone())?;
                Ok(ExporterConfig::Otlp(cfg))
            }
            // Kafka (src/kafka.rs, feature `kafka`) would plug in here too.
            _ => Err(Error::new(format!(
                "unsupported exporter URL {url:?}: expected nats://HOST:PORT or http(s)://HOST:PORT (OTLP)"
            ))),
        }
    }

    /// The exporter's name (its cursor is `LOG/.ship-cursor.<name>.json`).
    pub fn name(&self) -> &str {
        match self {
            ExporterConfig::Nats(c) => &c.name,
            ExporterConfig::Otlp(c) => &c.name,
        }
    }

    /// [`ExporterConfig::from_url`], renamed when `name` is given (the
    /// `export` / `export_name` options of the bindings' `init`); an empty
    /// name is an error.
    pub fn from_url_named(url: &str, name: Option<String>) -> Result<ExporterConfig> {
        let config = ExporterConfig::from_url(url)?;
        match name {
            Some(n) if n.is_empty() => Err(Error::new("the exporter's name is empty")),
            Some(n) => Ok(config.with_name(n)),
            None => Ok(config),
        }
    }

    /// Renames the exporter (two exporters of one log need two names).
    pub fn with_name(mut self, name: impl Into<String>) -> ExporterConfig {
        match &mut self {
            ExporterConfig::Nats(c) => c.name = name.into(),
            ExporterConfig::Otlp(c) => c.name = name.into(),
        }
        self
    }

    /// Builds the exporter. It connects in the background: this does not
    /// wait for the receiver.
    pub fn build(self) -> Result<Box<dyn Exporter + Send>> {
        match self {
            ExporterConfig::Nats(c) => Ok(Box::new(NatsExporter::new(c)?)),
            ExporterConfig::Otlp(c) => Ok(Box::new(OtlpExporter::new(c)?)),
        }
    }
}

/// Builds an exporter from its URL (see [`ExporterConfig::from_url`]).
pub fn exporter_from_url(url: &str) -> Result<Box<dyn Exporter + Send>> {
    ExporterConfig::from_url(url)?.build()
}

/// What a background exporter ships through.
pub enum ExportTarget {
    /// An exporter to build on the exporter thread.
    Config(ExporterConfig),
    /// A ready exporter.
    Exporter(Box<dyn Exporter + Send>),
}

impl ExportTarget {
    /// The exporter a URL names (see [`ExporterConfig::from_url`]).
    pub fn url(url: &str) -> Result<ExportTarget> {
        Ok(ExportTarget::Config(ExporterConfig::from_url(url)?))
    }

    /// A ready exporter.
    pub fn exporter(e: impl Exporter + Send + 'static) -> ExportTarget {
        ExportTarget::Exporter(Box::new(e))
    }
}

impl From<ExporterConfig> for ExportTarget {
    fn from(c: ExporterConfig) -> ExportTarget {
        ExportTarget::Config(c)
    }
}

impl From<Box<dyn Exporter + Send>> for ExportTarget {
    fn from(e: Box<dyn Exporter + Send>) -> ExportTarget {
        ExportTarget::Exporter(e)
    }
}

impl std::fmt::Debug for ExportTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportTarget::Config(c) => f.debug_tuple("Config").field(c).finish(),
            ExportTarget::Exporter(e) => f.debug_tuple("Exporter").field(&e.name()).finish(),
        }
    }
}

/// What the exporter thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExporterState {
    /// Building the exporter, taking the lock.
    Starting,
    /// Another exporter of the same name holds this log directory's lock
    /// (another process sharing it); this one takes over when it ends.
    Standby,
    /// Following the log and shipping (retrying while the receiver is
    /// unreachable: see `consecutive_failures`).
    Shipping,
    /// Stopping: shipping what is left (bounded by `drain`'s timeout).
    Draining,
    /// The thread has ended.
    Stopped,
}

/// How a background exporter is doing.
#[derive(Clone, Debug, Serialize)]
pub struct ExporterStats {
    /// The exporter's name.
    pub exporter: String,
    /// What its thread is doing.
    pub state: ExporterState,
    /// Records the receiver acknowledged.
    pub shipped: u64,
    /// Batches fully acknowledged.
    pub batches: u64,
    /// Failed export attempts, each retried with back-off.
    pub failures: u64,
    /// Failed attempts since the last success: non-zero while the
    /// receiver is unreachable.
    pub consecutive_failures: u64,
    /// The last failure (export, log directory or cursor), if any.
    pub last_error: Option<String>,
    /// Whether the last drain caught up with the log.
    pub caught_up: bool,
}

struct Shared {
    name: String,
    /// Ends the current `ship` run (stop and drain both set it).
    interrupt: AtomicBool,
    /// Ends everything, a drain included.
    hard_stop: AtomicBool,
    draining: AtomicBool,
    shipped: AtomicU64,
    batches: AtomicU64,
    failures: AtomicU64,
    consecutive: AtomicU64,
    status: Mutex<Status>,
    done: Condvar,
    /// The log directory's exporter lock, while held.
    lock: Mutex<Option<File>>,
}

struct Status {
    state: ExporterState,
    last_error: Option<String>,
    caught_up: bool,
}

impl Shared {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, state: ExporterState) {
        let mut s = self.status();
        if s.state != ExporterState::Stopped {
            s.state = state;
        }
    }

    fn error(&self, e: impl std::fmt::Display) {
        self.status().last_error = Some(e.to_string());
    }

    /// Waits until the thread has ended or `deadline` passes.
    fn wait_stopped(&self, deadline: Instant) -> bool {
        let mut s = self.status();
        while s.state != ExporterState::Stopped {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = match self.done.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

/// Marks the thread stopped however it ends.
struct StoppedOnDrop(Arc<Shared>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        drop(self.0.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.0.status().state = ExporterState::Stopped;
        self.0.done.notify_all();
    }
}

/// Counts what the wrapped exporter delivers, for [`ExporterStats`].
struct Counted {
    inner: Box<dyn Exporter + Send>,
    shared: Arc<Shared>,
}

impl Exporter for Counted {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn export(&mut self, records: &[Outgoing]) -> std::result::Result<(), ExportFailure> {
        let s = &self.shared;
        match self.inner.export(records) {
            Ok(()) => {
                s.shipped.fetch_add(records.len() as u64, Ordering::Relaxed);
                s.batches.fetch_add(1, Ordering::Relaxed);
                s.consecutive.store(0, Ordering::Relaxed);
                Ok(())
            }
            Err(f) => {
                s.shipped
                    .fetch_add(f.delivered.min(records.len()) as u64, Ordering::Relaxed);
                s.failures.fetch_add(1, Ordering::Relaxed);
                s.consecutive.fetch_add(1, Ordering::Relaxed);
                s.error(format!(
                    "export to {} failed: {}",
                    self.inner.name(),
                    f.error
                ));
                Err(f)
            }
        }
    }
}

/// A running background exporter. Dropping it stops it, waiting at most
/// [`DROP_TIMEOUT`].
pub struct ExporterHandle {
    shared: Arc<Shared>,
    log_dir: PathBuf,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set in a forked child: the thread is the parent's.
    abandoned: AtomicBool,
}

impl std::fmt::Debug for ExporterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterHandle")
            .field("log_dir", &self.log_dir)
            .field("exporter", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl ExporterHandle {
    /// The log directory it follows.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The exporter's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How export is doing (cheap: a few atomic loads and a short lock).
    pub fn stats(&self) -> ExporterStats {
        let s = &self.shared;
        let status = s.status();
        ExporterStats {
            exporter: s.name.clone(),
            state: status.state,
            shipped: s.shipped.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            consecutive_failures: s.consecutive.load(Ordering::Relaxed),
            last_error: status.last_error.clone(),
            caught_up: status.caught_up,
        }
    }

    /// Whether the thread is still running.
    pub fn is_running(&self) -> bool {
        self.shared.status().state != ExporterState::Stopped
    }

    /// Stops at once: the thread ends after the batch in flight, if any
    /// (its records are sent again by the next exporter: at least once).
    /// Waits at most `timeout`; returns whether the thread has ended (if
    /// not, it is left to end by itself and never blocks the process's
    /// exit).
    pub fn stop(&self, timeout: Duration) -> bool {
        if self.abandoned.load(Ordering::Acquire) {
            return true;
        }
        let deadline = agent_audit::writer::deadline_after(timeout);
        self.shared.hard_stop.store(true, Ordering::Release);
        self.shared.interrupt.store(true, Ordering::Release);
        self.finish(deadline)
    }

    /// The drain at an agent's shutdown, after the log's own: [`drain`]
    /// within `left`, but at most [`UNREACHABLE_DRAIN`] while the
    /// receiver is known to be down (its last attempts failed): what is
    /// left stays in the log directory with the cursor, for the next
    /// exporter. The language bindings call this.
    ///
    /// [`drain`]: ExporterHandle::drain
    pub fn drain_at_shutdown(&self, left: Duration) -> bool {
        let left = if self.stats().consecutive_failures > 0 {
            left.min(UNREACHABLE_DRAIN)
        } else {
            left
        };
        self.drain(left)
    }

    /// Ships what the log holds now (call it after the log's own
    /// shutdown or flush), then stops; stops anyway once `timeout` has
    /// passed, e.g. while the receiver is unreachable. Returns whether
    /// everything was shipped and the thread has ended.
    pub fn drain(&self, timeout: Duration) -> bool {
        if self.abandoned.load(Ordering::Acquire) {
            return false;
        }
        let deadline = agent_audit::writer::deadline_after(timeout);
        self.shared.draining.store(true, Ordering::Release);
        self.shared.interrupt.store(true, Ordering::Release);
        let ended = self.shared.wait_stopped(deadline);
        if !ended {
            self.shared.hard_stop.store(true, Ordering::Release);
        }
        let ended = self.finish(deadline);
        ended && self.shared.status().caught_up
    }

    /// For a forked child, instead of dropping or stopping: the exporter
    /// thread did not come along (only the parent's exporter runs, and it
    /// ships the child's stream too, as it follows every stream of the
    /// directory). Closes the child's copy of the lock, so the lock goes
    /// when the parent's exporter ends, and forgets the thread at once:
    /// stopping and dropping the handle do nothing afterwards (the handle
    /// may be shared, e.g. in an `Arc`). Call it from the binding's
    /// after-fork-in-child hook.
    pub fn abandon_after_fork(&self) {
        self.abandoned.store(true, Ordering::Release);
        // try_lock: a mutex held in the parent at the fork stays locked here.
        if let Ok(mut lock) = self.shared.lock.try_lock() {
            drop(lock.take());
        }
        if let Ok(mut thread) = self.thread.try_lock()
            && let Some(t) = thread.take()
        {
            // Neither joined nor detached: the thread is not in this process.
            std::mem::forget(t);
        }
    }

    fn finish(&self, deadline: Instant) -> bool {
        let ended = self.shared.wait_stopped(deadline);
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if ended && let Some(t) = thread.take() {
            // The thread has marked itself stopped: this returns at once.
            let _ = t.join();
        } else if !ended {
            // Detach it: it ends after its export call returns.
            drop(thread.take());
        }
        ended
    }
}

impl Drop for ExporterHandle {
    fn drop(&mut self) {
        // Not again for a thread already joined or left to end.
        let running = self
            .thread
            .get_mut()
            .map_or_else(|p| p.into_inner().is_some(), |t| t.is_some());
        if running {
            self.stop(DROP_TIMEOUT);
        }
    }
}

/// Starts shipping `log_dir` through `target` on a background thread
/// ([`THREAD_NAME`], nice +[`NICE_INCREMENT`] on Linux) and returns at
/// once: the exporter is built, and connects, on that thread.
///
/// Errors only when the thread cannot be started. Everything after that
/// (receiver down, log directory not there yet, cursor trouble) is
/// retried with back-off until stopped, and shows in
/// [`ExporterHandle::stats`] (and on stderr when `opts.report_errors`).
/// With `opts.until_idle`, the thread ends once caught up for that long.
pub fn spawn_exporter(
    log_dir: impl Into<PathBuf>,
    target: impl Into<ExportTarget>,
    opts: ShipOptions,
) -> Result<ExporterHandle> {
    let log_dir = log_dir.into();
    let target = target.into();
    let name = match &target {
        ExportTarget::Config(c) => c.name().to_string(),
        ExportTarget::Exporter(e) => e.name().to_string(),
    };
    let shared = Arc::new(Shared {
        name,
        interrupt: AtomicBool::new(false),
        hard_stop: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        shipped: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        consecutive: AtomicU64::new(0),
        status: Mutex::new(Status {
            state: ExporterState::Starting,
            last_error: None,
            caught_up: false,
        }),
        done: Condvar::new(),
        lock: Mutex::new(None),
    });
    let thread = {
        let (dir, shared) = (log_dir.clone(), shared.clone());
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let guard = StoppedOnDrop(shared.clone());
                run(&dir, target, &opts, &shared);
                drop(guard);
            })
            .map_err(|e| Error::io("cannot start the exporter thread", e))?
    };
    Ok(ExporterHandle {
        shared,
        log_dir,
        thread: Mutex::new(Some(thread)),
        abandoned: AtomicBool::new(false),
    })
}

/// The path of the lock that lets one exporter of a name ship a log
/// directory at a time.
pub fn lock_path(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(format!(".ship-lock.{}", partition_token(name)))
}

/// Takes the exporter lock of `log_dir` for `name` without waiting:
/// `None` when another exporter holds it. Held until the file is dropped
/// (or the process ends).
pub fn try_lock(log_dir: &Path, name: &str) -> Result<Option<File>> {
    let path = lock_path(log_dir, name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(Error::io(format!("cannot lock {}", path.display()), e)),
    }
}

/// The exporter thread.
fn run(dir: &Path, target: ExportTarget, opts: &ShipOptions, shared: &Arc<Shared>) {
    lower_priority();
    let interrupt = &shared.interrupt;
    let hard_stop = &shared.hard_stop;
    let mut attempt = 0u32;
    // Sleeps until the retry or until `wake` is set.
    let retry = |attempt: &mut u32, e: &Error, wake: &AtomicBool| {
        shared.error(e);
        if *attempt == 0 && opts.report_errors {
            eprintln!("agent-audit export: {e}; retrying with back-off");
        }
        let delay = backoff(*attempt, opts.backoff_initial, opts.backoff_max);
        *attempt = attempt.saturating_add(1);
        sleep_unless_stopped(delay, wake);
    };

    // Starting: a drain asked for now still ships (bounded by the drain's
    // deadline, which sets `hard_stop`); only a stop ends the start.
    let inner = match target {
        ExportTarget::Exporter(e) => e,
        ExportTarget::Config(c) => loop {
            if hard_stop.load(Ordering::Acquire) {
                return;
            }
            match c.clone().build() {
                Ok(e) => break e,
                Err(e) => retry(&mut attempt, &e, hard_stop),
            }
        },
    };
    let mut exporter = Counted {
        inner,
        shared: shared.clone(),
    };

    attempt = 0;
    loop {
        if hard_stop.load(Ordering::Acquire) {
            return;
        }
        match fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))
            .and_then(|()| try_lock(dir, &shared.name))
        {
            Ok(Some(lock)) => {
                *shared.lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(lock);
                break;
            }
            Ok(None) => {
                // The holder ships this directory; a drain has nothing to do.
                if shared.draining.load(Ordering::Acquire) {
                    return;
                }
                shared.set_state(ExporterState::Standby);
                sleep_unless_stopped(opts.poll.max(Duration::from_millis(500)), interrupt);
            }
            Err(e) => retry(&mut attempt, &e, hard_stop),
        }
    }

    attempt = 0;
    loop {
        if shared.hard_stop.load(Ordering::Acquire) {
            return;
        }
        let draining = shared.draining.load(Ordering::Acquire);
        let result = if draining {
            // Until caught up (or the hard stop at the drain's deadline).
            shared.set_state(ExporterState::Draining);
            let drain_opts = ShipOptions {
                until_idle: Some(Duration::ZERO),
                ..opts.clone()
            };
            ship(dir, &mut exporter, &drain_opts, &shared.hard_stop)
        } else {
            shared.set_state(ExporterState::Shipping);
            ship(dir, &mut exporter, opts, interrupt)
        };
        match result {
            Ok(_) if draining => {
                if !shared.hard_stop.load(Ordering::Acquire) {
                    shared.status().caught_up = true;
                }
                return;
            }
            // Interrupted (the loop looks at why), or idle with `until_idle`.
            Ok(_) if interrupt.load(Ordering::Acquire) => attempt = 0,
            Ok(_) => return,
            Err(e) => {
                retry(&mut attempt, &e, interrupt);
                if shared.draining.load(Ordering::Acquire) {
                    // A drain cannot read the log either: give up on it.
                    return;
                }
            }
        }
    }
}

/// Raises the calling thread's nice value (Linux; best effort).
#[cfg(target_os = "linux")]
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Ok(current) = rustix::process::getpriority_process(Some(tid)) {
        let _ = rustix::process::setpriority_process(
            Some(tid),
            current.saturating_add(NICE_INCREMENT).min(19),
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing {
        calls: Arc<AtomicU64>,
    }

    impl Exporter for Failing {
        fn name(&self) -> &str {
            "failing"
        }

        fn export(&mut self, _: &[Outgoing]) -> std::result::Result<(), ExportFailure> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
            Err(ExportFailure {
                delivered: 0,
                error: Error::new("receiver down"),
            })
        }
    }

    fn quick_opts() -> ShipOptions {
        ShipOptions {
            poll: Duration::from_millis(10),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            report_errors: false,
            ..ShipOptions::default()
        }
    }

    #[test]
    fn urls_pick_the_exporter() {
        let c = ExporterConfig::from_url("nats://127.0.0.1:4222").unwrap();
        assert!(matches!(&c, ExporterConfig::Nats(n) if n.url == "nats://127.0.0.1:4222"));
        assert_eq!(c.name(), "nats");
        assert_eq!(c.with_name("central").name(), "central");
        assert!(ExporterConfig::from_url("NATS://host:4222").is_ok());
        let o = ExporterConfig::from_url("http://127.0.0.1:4318").unwrap();
        assert!(matches!(&o, ExporterConfig::Otlp(c) if c.endpoint == "http://127.0.0.1:4318"));
        assert_eq!(o.name(), "otlp");
        assert!(o.build().is_ok());
        for bad in [
            "http://",
            "gopher://b:70",
            "ftp://x",
            "127.0.0.1:4222",
            "",
            "nats://host:notaport",
        ] {
            let e = ExporterConfig::from_url(bad).unwrap_err().to_string();
            assert!(
                e.contains(bad) || e.contains("NATS") || e.contains("OTLP"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_failing_receiver_is_retried_and_stop_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let stream = tmp.path().join("s1");
        fs::create_dir_all(&stream).unwrap();
        fs::write(
            stream.join("seg-000000.jsonl"),
            b"{\"seq\":0,\"kind\":\"stream_start\"}\n{\"seq\":1,\"kind\":\"tool_call\",\"principal\":{\"tenant_id\":\"t\"}}\n",
        )
        .unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let h = spawn_exporter(
            tmp.path(),
            ExportTarget::exporter(Failing {
                calls: calls.clone(),
            }),
            quick_opts(),
        )
        .unwrap();
        let t = Instant::now();
        while h.stats().failures < 3 {
            assert!(t.elapsed() < Duration::from_secs(10), "no retries");
            std::thread::sleep(Duration::from_millis(5));
        }
        let s = h.stats();
        assert!(calls.load(Ordering::Relaxed) >= 3);
        assert_eq!(s.state, ExporterState::Shipping);
        assert!(s.failures >= 3 && s.consecutive_failures >= 3, "{s:?}");
        assert_eq!(s.shipped, 0);
        assert!(s.last_error.unwrap().contains("receiver down"));
        // A drain cannot finish with the receiver down: bounded by its timeout.
        let t = Instant::now();
        assert!(!h.drain(Duration::from_millis(200)));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // Left to end by itself, it does once its attempt returns.
        while h.is_running() {
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", h.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!h.stats().caught_up);
        // Stopping a stopped exporter returns at once.
        assert!(h.stop(Duration::ZERO));
    }

    #[test]
    fn one_exporter_per_log_directory_and_name() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = try_lock(tmp.path(), "failing").unwrap().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let h = spawn_exporter(
            tmp.path(),
            ExportTarget::exporter(Failing {
                calls: calls.clone(),
            }),
            quick_opts(),
        )
        .unwrap();
        let t = Instant::now();
        while h.stats().state != ExporterState::Standby {
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", h.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(lock);
        while h.stats().state != ExporterState::Shipping {
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", h.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(try_lock(tmp.path(), "failing").unwrap().is_none());
        assert!(h.stop(Duration::from_secs(5)));
        assert_eq!(h.stats().state, ExporterState::Stopped);
        // Its lock went with it.
        assert!(try_lock(tmp.path(), "failing").unwrap().is_some());
    }

    #[test]
    fn a_forked_child_lets_go_of_the_lock_without_waiting() {
        let tmp = tempfile::tempdir().unwrap();
        let h = spawn_exporter(
            tmp.path(),
            ExportTarget::exporter(Failing {
                calls: Arc::new(AtomicU64::new(0)),
            }),
            // Nothing to ship: the thread ends by itself after 2 s.
            ShipOptions {
                until_idle: Some(Duration::from_secs(2)),
                ..quick_opts()
            },
        )
        .unwrap();
        let t = Instant::now();
        while h.stats().state != ExporterState::Shipping {
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", h.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(try_lock(tmp.path(), "failing").unwrap().is_none());
        let t = Instant::now();
        h.abandon_after_fork();
        assert!(h.stop(Duration::from_secs(5)));
        assert!(!h.drain(Duration::from_secs(5)));
        drop(h);
        assert!(t.elapsed() < Duration::from_millis(100));
        // Here (one process) the only copy of the lock is closed.
        assert!(try_lock(tmp.path(), "failing").unwrap().is_some());
    }

    struct Collecting {
        got: Arc<Mutex<Vec<String>>>,
    }

    impl Exporter for Collecting {
        fn name(&self) -> &str {
            "collecting"
        }

        fn export(&mut self, records: &[Outgoing]) -> std::result::Result<(), ExportFailure> {
            let mut got = self.got.lock().unwrap();
            got.extend(records.iter().map(|r| r.msg_id.clone()));
            Ok(())
        }
    }

    fn fake_stream(dir: &Path, records: u64) {
        let stream = dir.join("s1");
        fs::create_dir_all(&stream).unwrap();
        let mut text = String::from("{\"seq\":0,\"stream_id\":\"s1\",\"kind\":\"stream_start\"}\n");
        for seq in 1..records {
            text.push_str(&format!(
                "{{\"seq\":{seq},\"stream_id\":\"s1\",\"kind\":\"tool_call\",\"principal\":{{\"tenant_id\":\"t\"}}}}\n"
            ));
        }
        fs::write(stream.join("seg-000000.jsonl"), text).unwrap();
    }

    #[test]
    fn a_drain_right_after_the_start_still_ships_everything() {
        let tmp = tempfile::tempdir().unwrap();
        fake_stream(tmp.path(), 1000);
        let got = Arc::new(Mutex::new(Vec::new()));
        let h = spawn_exporter(
            tmp.path(),
            ExportTarget::exporter(Collecting { got: got.clone() }),
            quick_opts(),
        )
        .unwrap();
        assert!(h.drain(Duration::from_secs(10)), "{:?}", h.stats());
        let s = h.stats();
        assert_eq!(
            (s.state, s.shipped, s.caught_up),
            (ExporterState::Stopped, 1000, true)
        );
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1000);
        assert_eq!(got[999], "s1:999");
    }

    #[test]
    fn a_drain_in_standby_returns_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        fake_stream(tmp.path(), 10);
        let _lock = try_lock(tmp.path(), "collecting").unwrap().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let h = spawn_exporter(
            tmp.path(),
            ExportTarget::exporter(Collecting { got: got.clone() }),
            quick_opts(),
        )
        .unwrap();
        let t = Instant::now();
        while h.stats().state != ExporterState::Standby {
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", h.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = Instant::now();
        assert!(!h.drain(Duration::from_secs(10)));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(got.lock().unwrap().is_empty());
    }

    #[test]
    fn a_missing_log_directory_is_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("not-yet");
        let h = spawn_exporter(
            &dir,
            ExportTarget::exporter(Failing {
                calls: Arc::new(AtomicU64::new(0)),
            }),
            quick_opts(),
        )
        .unwrap();
        let t = Instant::now();
        while h.stats().state != ExporterState::Shipping {
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", h.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        // Nothing to ship: a drain catches up at once.
        assert!(h.drain(Duration::from_secs(5)));
        assert!(h.stats().caught_up);
    }
}
