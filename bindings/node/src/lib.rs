//! Node.js binding of agent-audit (napi-rs 3). Thin on purpose: it copies
//! JS values into owned Rust values ([`convert`]), hands them to the core
//! and maps core errors to JS errors with a stable `code` ([`error`]).
//! Everything else (schema, redaction, hashing, signing, the writer,
//! verifying, reading traces, the command line) is the core's.
//!
//! One writer per process and log directory: writers live in a
//! process-global registry, so each `worker_threads` thread that loads
//! this addon and opens (or attaches to) the same directory writes into
//! the same stream. Blocking work (flush, shutdown, verify, reading
//! traces) runs on libuv's pool as an [`AsyncTask`]; `emit` only copies and
//! `try_send`s. The TypeScript API over this module is in `node/src`.
//!
//! With the `export` option, `openLog` also starts an exporter
//! (`agent-audit-ship`'s background thread) on the log directory; it is
//! kept with the writer in the registry (one per log), and shutting the
//! writer down drains it, bounded by the same timeout.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// N-API is a C interface: the generated glue, reading an external, and
// clearing a pending exception need `unsafe`. Each block says why it holds.
#![allow(unsafe_code)]

pub mod convert;
pub mod error;
pub mod policy;
pub mod tool;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use agent_audit::ingest::event_from_map;
use agent_audit::keys::PublicKey;
use agent_audit::options::LogOptions;
use agent_audit::trace::{TraceFilter, list_traces, show_trace};
use agent_audit::verify::{VerifyOptions, verify_log};
use agent_audit::{AuditError, AuditLog, ErrorKind, SpanId, Timestamp, TraceId};
use agent_audit_ship::background::{ExportTarget, ExporterHandle, spawn_exporter};
use agent_audit_ship::{ExporterConfig, ShipOptions};
use napi::bindgen_prelude::{
    AsyncTask, Env, External, FromNapiRef, ToNapiValue, TypeName, Unknown, ValueType,
};
use napi::{Task, sys};
use napi_derive::napi;
use serde_json::Value;

use crate::convert::{Captured, to_json};
use crate::error::{Failure, audit_to_js, to_js};

// Events are allocated on the JS thread and freed on the writer's: with
// glibc's allocator that contends on the arena lock (a futex wake per
// free, measured as a third of `emit`); mimalloc frees across threads
// without it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Default bound of `flush`, `shutdown` and their synchronous twins.
const DEFAULT_TIMEOUT_MS: f64 = 5000.0;

/// Open writers of this process by absolute log directory, shared by the
/// main thread and every worker thread.
static LOGS: LazyLock<Mutex<HashMap<PathBuf, Entry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A writer in the registry, with the exporter `export` started for it.
#[derive(Clone)]
struct Entry {
    log: AuditLog,
    exporter: Option<Arc<ExporterHandle>>,
}

/// Closes a writer and then drains its exporter within what is left of
/// `t` (at most half a second while the receiver is down). Returns
/// whether the writer closed in time; how the export went is in
/// `exportStats()`.
fn close(log: &AuditLog, exporter: Option<&ExporterHandle>, key: &PathBuf, t: Duration) -> bool {
    let start = Instant::now();
    let ok = log.shutdown(t);
    forget(log, key);
    if let Some(h) = exporter {
        h.drain_at_shutdown(t.saturating_sub(start.elapsed()));
    }
    ok
}

fn timeout(ms: Option<f64>) -> Duration {
    let ms = ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if ms.is_finite() && ms > 0.0 {
        Duration::from_secs_f64(ms / 1000.0)
    } else {
        Duration::ZERO
    }
}

fn registry_key(dir: &std::path::Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn forget(log: &AuditLog, key: &PathBuf) {
    if let Ok(mut logs) = LOGS.lock()
        && logs
            .get(key)
            .is_some_and(|e| e.log.stream_id() == log.stream_id())
    {
        logs.remove(key);
    }
}

/// JSON handed back to JS from a task.
pub struct Json(pub Value);

impl TypeName for Json {
    fn type_name() -> &'static str {
        "unknown"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl ToNapiValue for Json {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        // SAFETY: forwarded with the env napi-rs gave us.
        unsafe { Value::to_napi_value(env, val.0) }
    }
}

/// Counters of a writer (numbers: they stay far below 2^53).
#[napi(object)]
pub struct LogStats {
    /// Records written, the writer's own included.
    pub written: f64,
    /// Events lost (queue full, byte bound, closed, unencodable).
    pub dropped: f64,
    /// Events waiting in the queue.
    pub queued: f64,
    /// Approximate bytes waiting in the queue.
    pub queued_bytes: f64,
    /// Bytes written to segment files.
    pub bytes_written: f64,
    /// I/O errors met (each retried).
    pub io_errors: f64,
    /// Checkpoints written.
    pub checkpoints: f64,
}

/// How the exporter started with `export` is doing (counts are numbers:
/// they stay far below 2^53).
#[napi(object)]
pub struct ExportStats {
    /// The exporter's name (its cursor is `LOG/.ship-cursor.<name>.json`).
    pub exporter: String,
    /// `starting` | `standby` (another process ships this directory) |
    /// `shipping` | `draining` | `stopped`.
    pub state: String,
    /// Records the receiver acknowledged.
    pub shipped: f64,
    /// Batches fully acknowledged.
    pub batches: f64,
    /// Failed export attempts, each retried with back-off.
    pub failures: f64,
    /// Failed attempts since the last success: non-zero while the
    /// receiver is unreachable.
    pub consecutive_failures: f64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Whether the drain at shutdown shipped everything.
    pub caught_up: bool,
}

/// A handle to this process's writer for one log directory.
#[napi]
pub struct NativeLog {
    pub(crate) log: AuditLog,
    exporter: Option<Arc<ExporterHandle>>,
    key: PathBuf,
    reused: bool,
}

#[napi]
impl NativeLog {
    /// The stream this writer writes (a UUIDv7).
    #[napi(getter)]
    pub fn stream_id(&self) -> String {
        self.log.stream_id().to_string()
    }

    /// The stream's directory.
    #[napi(getter)]
    pub fn stream_dir(&self) -> String {
        self.log.stream_dir().display().to_string()
    }

    /// The absolute log directory.
    #[napi(getter)]
    pub fn dir(&self) -> String {
        self.key.display().to_string()
    }

    /// True when this handle joined a writer another thread had opened
    /// (its options were then not applied).
    #[napi(getter)]
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Whether the writer has been shut down.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.log.is_closed()
    }

    /// Copies `event` (a record without the writer's fields; `ts` may be
    /// epoch milliseconds) and queues it. Returns false when the queue was
    /// full (the loss is counted and logged as a `gap`). Throws
    /// `ERR_AUDIT_INVALID_EVENT` for a malformed event and
    /// `ERR_AUDIT_CLOSED` after shutdown.
    #[napi]
    pub fn emit(&self, env: &Env, event: Unknown<'_>) -> napi::Result<bool> {
        let Value::Object(m) = to_json(env, event)? else {
            return Err(to_js(
                env,
                "ERR_AUDIT_INVALID_EVENT",
                "an event must be an object",
            ));
        };
        self.emit_map(env, m)
    }

    /// `emit` for an event given as JSON text: what `JSON.stringify` makes
    /// of an event that holds only plain values. Parsing text is far
    /// cheaper than walking a JS object property by property through
    /// N-API; values JSON cannot hold (bigint, Map, NaN, cycles …) go
    /// through `emit`.
    #[napi]
    pub fn emit_json(&self, env: &Env, text: String) -> napi::Result<bool> {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => self.emit_map(env, m),
            Ok(_) => Err(to_js(
                env,
                "ERR_AUDIT_INVALID_EVENT",
                "an event must be an object",
            )),
            Err(e) => Err(to_js(
                env,
                "ERR_AUDIT_INVALID_EVENT",
                &format!("an event must be JSON text: {e}"),
            )),
        }
    }
}

impl NativeLog {
    fn emit_map(&self, env: &Env, mut m: serde_json::Map<String, Value>) -> napi::Result<bool> {
        let ts = match m.get("ts") {
            Some(Value::Number(n)) => n.as_f64(),
            _ => None,
        };
        if ts.is_some() {
            m.remove("ts");
        }
        let mut event = event_from_map(&mut m).map_err(|e| audit_to_js(env, &e))?;
        if let Some(ms) = ts.filter(|ms| ms.is_finite()) {
            event.ts = Timestamp::from_unix_millis(ms as i64);
        }
        self.log.emit(event).map_err(|e| audit_to_js(env, &e))
    }
}

#[napi]
impl NativeLog {
    /// Writes everything queued and checkpoints, off the event loop.
    /// Resolves to false if it did not finish within `timeoutMs`.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn flush(&self, timeout_ms: Option<f64>) -> AsyncTask<FlushTask> {
        AsyncTask::new(FlushTask {
            log: self.log.clone(),
            timeout: timeout(timeout_ms),
        })
    }

    /// `flush` on the calling thread, for `process.on('exit')` where
    /// nothing asynchronous can run any more.
    #[napi]
    pub fn flush_sync(&self, timeout_ms: Option<f64>) -> bool {
        self.log.flush(timeout(timeout_ms))
    }

    /// Drains the queue, closes the stream (`stream_end`, final
    /// checkpoint) and stops the writer, off the event loop. Resolves to
    /// false if it did not finish within `timeoutMs`. Idempotent.
    /// With an exporter, it then ships what is left within the rest of
    /// `timeoutMs` (at most 500 ms while its export attempts are failing)
    /// and stops it: see `exportStats()`.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn shutdown(&self, timeout_ms: Option<f64>) -> AsyncTask<ShutdownTask> {
        AsyncTask::new(ShutdownTask {
            log: self.log.clone(),
            exporter: self.exporter.clone(),
            key: self.key.clone(),
            timeout: timeout(timeout_ms),
        })
    }

    /// `shutdown` on the calling thread: the last drain on process exit,
    /// bounded by `timeoutMs` (the exporter's drain included).
    #[napi]
    pub fn shutdown_sync(&self, timeout_ms: Option<f64>) -> bool {
        close(
            &self.log,
            self.exporter.as_deref(),
            &self.key,
            timeout(timeout_ms),
        )
    }

    /// How the exporter `export` started is doing (also after shutdown),
    /// or null without one.
    #[napi]
    pub fn export_stats(&self) -> Option<ExportStats> {
        let s = self.exporter.as_ref()?.stats();
        let state = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{:?}", s.state).to_lowercase());
        Some(ExportStats {
            exporter: s.exporter,
            state,
            shipped: s.shipped as f64,
            batches: s.batches as f64,
            failures: s.failures as f64,
            consecutive_failures: s.consecutive_failures as f64,
            last_error: s.last_error,
            caught_up: s.caught_up,
        })
    }

    /// Current counters, read without stopping the writer.
    #[napi]
    pub fn stats(&self) -> LogStats {
        let s = self.log.stats();
        LogStats {
            written: s.written as f64,
            dropped: s.dropped as f64,
            queued: s.queued as f64,
            queued_bytes: s.queued_bytes as f64,
            bytes_written: s.bytes_written as f64,
            io_errors: s.io_errors as f64,
            checkpoints: s.checkpoints as f64,
        }
    }
}

/// The exporter an `export` URL (and `exportName`) describe.
fn export_config(url: &str, name: Option<String>) -> Result<ExporterConfig, String> {
    ExporterConfig::from_url_named(url, name).map_err(|e| format!("export: {e}"))
}

/// Opens this process's writer for `options.dir` (camelCase or snake_case
/// option names, as `LogOptions` reads them), or joins the one already
/// open for that directory in this process. With `export` (an exporter
/// URL, `nats://HOST:PORT`), a new writer gets an exporter thread that
/// ships the log directory (`exportName` names its cursor). Throws
/// `ERR_AUDIT_CONFIG`, `ERR_AUDIT_KEY` or `ERR_AUDIT_IO`.
#[napi]
pub fn open_log(env: &Env, options: Unknown<'_>) -> napi::Result<NativeLog> {
    let value = to_json(env, options)?;
    let mut options = LogOptions::from_value(value).map_err(|e| audit_to_js(env, &e))?;
    let export = match options.export.take() {
        Some(url) => Some(
            export_config(&url, options.export_name.take())
                .map_err(|m| to_js(env, "ERR_AUDIT_CONFIG", &m))?,
        ),
        None => None,
    };
    let config = options.into_config().map_err(|e| audit_to_js(env, &e))?;
    let key = registry_key(&config.dir);
    let mut logs = LOGS.lock().map_err(|_| {
        to_js(
            env,
            "ERR_AUDIT_IO",
            "the writer registry is unusable (a thread panicked)",
        )
    })?;
    if let Some(entry) = logs.get(&key).filter(|e| !e.log.is_closed()) {
        return Ok(NativeLog {
            log: entry.log.clone(),
            exporter: entry.exporter.clone(),
            key,
            reused: true,
        });
    }
    let log_dir = config.dir.clone();
    let log = AuditLog::open(config).map_err(|e| audit_to_js(env, &e))?;
    let exporter = match export {
        None => None,
        // Failures after this (receiver down ...) are retried on the
        // exporter's thread, reported once per outage on stderr and
        // counted in `exportStats()`; only a thread that cannot start
        // fails here.
        Some(target) => {
            match spawn_exporter(log_dir, ExportTarget::from(target), ShipOptions::default()) {
                Ok(h) => Some(Arc::new(h)),
                Err(e) => {
                    log.shutdown(Duration::from_secs(1));
                    return Err(to_js(
                        env,
                        "ERR_AUDIT_IO",
                        &format!("cannot start the exporter: {e}"),
                    ));
                }
            }
        }
    };
    logs.insert(
        key.clone(),
        Entry {
            log: log.clone(),
            exporter: exporter.clone(),
        },
    );
    Ok(NativeLog {
        log,
        exporter,
        key,
        reused: false,
    })
}

/// The writer another thread of this process opened for `dir`, if any.
#[napi]
pub fn attach_log(dir: String) -> Option<NativeLog> {
    let key = registry_key(std::path::Path::new(&dir));
    let logs = LOGS.lock().ok()?;
    logs.get(&key)
        .filter(|e| !e.log.is_closed())
        .map(|e| NativeLog {
            log: e.log.clone(),
            exporter: e.exporter.clone(),
            key,
            reused: true,
        })
}

/// A new W3C trace id (32 lowercase hex).
#[napi]
pub fn new_trace_id() -> String {
    TraceId::random().to_string()
}

/// A new W3C span id (16 lowercase hex).
#[napi]
pub fn new_span_id() -> String {
    SpanId::random().to_string()
}

/// Copies `value` now (the arguments of a call as they were when it
/// started); put the result anywhere in an event passed to `emit`.
#[napi(ts_return_type = "ExternalObject<'Captured'>")]
pub fn capture(env: &Env, value: Unknown<'_>) -> napi::Result<External<Captured>> {
    let v = to_json(env, value)?;
    Ok(External::new(Captured(Mutex::new(Some(v)))))
}

/// What `emit` would store for `value`: the conversion rules made
/// visible (tests, debugging).
#[napi(ts_return_type = "unknown")]
pub fn to_audit_value(env: &Env, value: Unknown<'_>) -> napi::Result<Json> {
    to_json(env, value).map(Json)
}

/// Runs the `agent-audit` command line with `args` (the first is the
/// program name) on the calling thread; returns its exit code.
#[napi]
pub fn run_cli(args: Vec<String>) -> u32 {
    u32::from(agent_audit_cli::run_cli(args))
}

/// Options of `verifyLog`.
#[napi(object)]
pub struct VerifyLogOptions {
    /// Keys every stream must be signed with: PEM text, a PEM file path,
    /// or 64 hex characters.
    pub trusted_keys: Option<Vec<String>>,
}

fn parse_public_key(s: &str) -> agent_audit::Result<PublicKey> {
    if s.contains("-----BEGIN") {
        PublicKey::from_pem(s)
    } else if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        PublicKey::from_hex(s)
    } else {
        PublicKey::load(std::path::Path::new(s))
    }
}

/// Verifies every stream of a log directory off the event loop; resolves
/// to the report (streams, findings, records, `tampered`, `exitCode`).
/// Rejects with `ERR_AUDIT_INVALID_LOG` when the input is not a log.
#[napi(ts_return_type = "Promise<unknown>")]
pub fn verify_log_dir(dir: String, options: Option<VerifyLogOptions>) -> AsyncTask<JsonTask> {
    let keys = options.and_then(|o| o.trusted_keys).unwrap_or_default();
    AsyncTask::new(JsonTask::new(move || {
        let trusted_keys = keys
            .iter()
            .map(|k| parse_public_key(k))
            .collect::<agent_audit::Result<Vec<_>>>()?;
        let report = verify_log(std::path::Path::new(&dir), &VerifyOptions { trusted_keys })?;
        let mut v = serde_json::to_value(&report)
            .map_err(|e| AuditError::new(ErrorKind::InvalidLog, e.to_string()))?;
        if let Value::Object(m) = &mut v {
            m.insert("tampered".into(), Value::Bool(report.is_tampered()));
            m.insert("exitCode".into(), Value::from(report.exit_code()));
        }
        Ok(v)
    }))
}

/// Rebuilds one trace as the document of `agent-audit show --json`, off
/// the event loop. Rejects with `ERR_AUDIT_NOT_FOUND` for an unknown trace.
#[napi(ts_return_type = "Promise<unknown>")]
pub fn show_trace_doc(dir: String, trace_id: String) -> AsyncTask<JsonTask> {
    AsyncTask::new(JsonTask::new(move || {
        show_trace(std::path::Path::new(&dir), &trace_id)
    }))
}

/// Filters of `listTraceSummaries`.
#[napi(object)]
pub struct ListTracesOptions {
    /// Only traces with this risk flag.
    pub flag: Option<String>,
    /// Only traces started at or after this RFC 3339 time.
    pub since: Option<String>,
}

/// The traces of a log, oldest first, off the event loop.
#[napi(ts_return_type = "Promise<unknown>")]
pub fn list_trace_summaries(
    dir: String,
    options: Option<ListTracesOptions>,
) -> AsyncTask<JsonTask> {
    AsyncTask::new(JsonTask::new(move || {
        let (flag, since) = options.map_or((None, None), |o| (o.flag, o.since));
        let filter = TraceFilter {
            flag,
            since: since.map(|s| Timestamp::parse_rfc3339(&s)).transpose()?,
        };
        let list = list_traces(std::path::Path::new(&dir), &filter)?;
        serde_json::to_value(list)
            .map_err(|e| AuditError::new(ErrorKind::InvalidLog, e.to_string()))
    }))
}

/// `flush` off the event loop.
pub struct FlushTask {
    log: AuditLog,
    timeout: Duration,
}

impl Task for FlushTask {
    type Output = bool;
    type JsValue = bool;

    fn compute(&mut self) -> napi::Result<bool> {
        Ok(self.log.flush(self.timeout))
    }

    fn resolve(&mut self, _env: Env, output: bool) -> napi::Result<bool> {
        Ok(output)
    }
}

/// `shutdown` off the event loop.
pub struct ShutdownTask {
    log: AuditLog,
    exporter: Option<Arc<ExporterHandle>>,
    key: PathBuf,
    timeout: Duration,
}

impl Task for ShutdownTask {
    type Output = bool;
    type JsValue = bool;

    fn compute(&mut self) -> napi::Result<bool> {
        Ok(close(
            &self.log,
            self.exporter.as_deref(),
            &self.key,
            self.timeout,
        ))
    }

    fn resolve(&mut self, _env: Env, output: bool) -> napi::Result<bool> {
        Ok(output)
    }
}

type JsonJob = Box<dyn FnOnce() -> agent_audit::Result<Value> + Send>;

/// A read-only job (verify, show, list) off the event loop; core errors
/// reject the promise with their `ERR_AUDIT_…` code.
pub struct JsonTask {
    job: Option<JsonJob>,
}

impl JsonTask {
    fn new(job: impl FnOnce() -> agent_audit::Result<Value> + Send + 'static) -> Self {
        JsonTask {
            job: Some(Box::new(job)),
        }
    }
}

impl Task for JsonTask {
    type Output = Result<Value, Failure>;
    type JsValue = Json;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(match self.job.take() {
            Some(job) => job().map_err(Failure::from),
            None => Err(Failure {
                code: "ERR_AUDIT_IO".into(),
                message: "task ran twice".into(),
            }),
        })
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<Json> {
        output.map(Json).map_err(|f| f.to_js(&env))
    }
}

/// The value of a captured external without taking it (the policy check
/// reads the arguments the event still needs), or None for other values.
pub(crate) fn peek_captured(env: &Env, v: &Unknown<'_>) -> Option<Value> {
    use napi::bindgen_prelude::JsValue;
    if v.get_type().ok()? != ValueType::External {
        return None;
    }
    // SAFETY: as in `read_captured`: checked to be our `Captured`.
    let ext = unsafe { External::<Captured>::from_napi_ref(env.raw(), v.raw()) }.ok()?;
    ext.0.lock().ok()?.clone()
}

/// Reads a captured external back (used by the converter).
pub(crate) fn read_captured(env: &Env, v: &Unknown<'_>) -> Option<Value> {
    use napi::bindgen_prelude::JsValue;
    // SAFETY: `from_napi_ref` checks that the external is a `Captured`
    // this module created and fails otherwise.
    let ext = unsafe { External::<Captured>::from_napi_ref(env.raw(), v.raw()) }.ok()?;
    ext.0.lock().ok()?.take()
}
