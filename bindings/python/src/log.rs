//! `AuditLog` and `SpanContext`: thin wrappers over the core's writer
//! handle and trace ids. Events are built here, on the caller's thread,
//! from Python values copied by [`crate::convert`]; everything after the
//! queue happens on the core's writer thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_audit::ingest::event_from_map;
use agent_audit::options::LogOptions;
use agent_audit::policy::{Alert, PolicyEngine, PreVerdict, ToolGate, Verdict};
use agent_audit::record::{Caller, OtelContext, Outcome, ResultStatus, ToolCall, ToolInfo};
use agent_audit::{
    AuditLog, Body, CaptureMode, Event, Overflow, PayloadPart, Principal, SpanId, Timestamp,
    TraceId,
};
use agent_audit_ship::background::{ExportTarget, ExporterHandle, spawn_exporter};
use agent_audit_ship::{ExporterConfig, ShipOptions};
use pyo3::exceptions::{PyBaseException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use serde_json::{Map, Value};

use crate::convert::{Converter, Limits, lossy_string, qualified_name, to_py, to_value};
use crate::error::{AuditIOError, ConfigError, IntoPyResult, InvalidEventError};
use crate::tool::{Ended, PyToolSpec};

/// The trace and span an event belongs to, and who the agent acts for.
/// Immutable: a child step gets a new context ([`PySpanContext::child`]).
#[pyclass(frozen, name = "SpanContext", module = "agent_audit._native")]
pub struct PySpanContext {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    parent: Option<SpanId>,
    principal: Option<Arc<Principal>>,
    retention_class: Option<Arc<str>>,
}

fn parse_caller(caller: Option<&str>) -> PyResult<Option<Caller>> {
    match caller {
        None => Ok(None),
        Some("human") => Ok(Some(Caller::Human)),
        Some("system") => Ok(Some(Caller::System)),
        Some(other) => Err(InvalidEventError::new_err(format!(
            "caller must be \"human\" or \"system\", got {other:?}"
        ))),
    }
}

#[pymethods]
impl PySpanContext {
    /// The root span of a new trace; the principal fields given override
    /// the log's defaults for every event of the trace.
    #[staticmethod]
    #[pyo3(signature = (*, user_id=None, session_id=None, agent_id=None, tenant_id=None, caller=None, retention_class=None))]
    fn new_trace(
        user_id: Option<String>,
        session_id: Option<String>,
        agent_id: Option<String>,
        tenant_id: Option<String>,
        caller: Option<&str>,
        retention_class: Option<&str>,
    ) -> PyResult<Self> {
        let principal = Principal {
            tenant_id,
            user_id,
            user_id_hash: None,
            agent_id,
            session_id,
            caller: parse_caller(caller)?,
        };
        Ok(PySpanContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent: None,
            principal: (principal != Principal::default()).then(|| Arc::new(principal)),
            retention_class: retention_class.map(Arc::from),
        })
    }

    /// A new span in the same trace whose parent is this span.
    pub(crate) fn child(&self) -> Self {
        PySpanContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            parent: Some(self.span_id),
            principal: self.principal.clone(),
            retention_class: self.retention_class.clone(),
        }
    }

    /// A child span whose events are attributed to another agent (a
    /// sub-agent started under this span).
    fn child_agent(&self, agent_id: String) -> Self {
        let mut p = self.principal.as_deref().cloned().unwrap_or_default();
        p.agent_id = Some(agent_id);
        PySpanContext {
            principal: Some(Arc::new(p)),
            ..self.child()
        }
    }

    /// The trace id, 32 lowercase hex characters.
    #[getter]
    fn trace_id(&self) -> String {
        self.trace_id.to_string()
    }

    /// This span's id, 16 lowercase hex characters.
    #[getter]
    fn span_id(&self) -> String {
        self.span_id.to_string()
    }

    /// The parent span's id, or None for a trace's root span.
    #[getter]
    fn parent_span_id(&self) -> Option<String> {
        self.parent.map(|p| p.to_string())
    }

    /// The agent id events of this span are attributed to, if set here.
    #[getter]
    fn agent_id(&self) -> Option<String> {
        self.principal.as_ref().and_then(|p| p.agent_id.clone())
    }

    fn __repr__(&self) -> String {
        format!(
            "SpanContext(trace_id={}, span_id={}, parent_span_id={})",
            self.trace_id,
            self.span_id,
            self.parent.map_or_else(|| "None".into(), |p| p.to_string())
        )
    }
}

impl PySpanContext {
    /// The root span of a new trace with the log's default principal.
    pub(crate) fn root() -> Self {
        PySpanContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent: None,
            principal: None,
            retention_class: None,
        }
    }

    fn place(&self, event: &mut Event) {
        event.trace_id = Some(self.trace_id);
        event.span_id = Some(self.span_id);
        event.parent_span_id = self.parent;
        if event.principal.is_none() {
            event.principal = self.principal.clone();
        }
        if event.retention_class.is_none() {
            event.retention_class = self.retention_class.clone();
        }
    }
}

/// One log writer: a stream in a log directory with its background thread.
#[pyclass(frozen, name = "AuditLog", module = "agent_audit._native")]
pub struct PyAuditLog {
    inner: AuditLog,
    // `overflow="block"` waits for room: without the GIL, so other Python
    // threads run meanwhile.
    blocking: bool,
    // Set in a forked child: the parent's writer thread does not exist here.
    abandoned: AtomicBool,
    pub(crate) limits: Limits,
    // The exporter `export=` started next to the writer (agent-audit-ship's
    // background thread), kept after shutdown for its last stats.
    exporter: Mutex<Option<Arc<ExporterHandle>>>,
}

/// The exporter an `export` URL (and `export_name`) describe; a bad URL is
/// a `ConfigError`, before anything is opened.
fn export_config(url: &str, name: Option<String>) -> PyResult<ExporterConfig> {
    ExporterConfig::from_url_named(url, name)
        .map_err(|e| ConfigError::new_err(format!("export: {e}")))
}

/// The arguments of a call by parameter name: `names` are the positional
/// parameter names (after `skip` leading ones such as `self`), extra
/// positional arguments go under `varargs`, keyword arguments by name.
fn args_value(
    conv: &mut Converter,
    names: &Bound<'_, PyTuple>,
    skip: usize,
    varargs: Option<&str>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> Value {
    let name_at = |i: usize| {
        names.get_item(i).ok().map(|n| {
            n.cast::<PyString>()
                .map(lossy_string)
                .unwrap_or_else(|_| format!("arg{}", i + skip))
        })
    };
    args_by_name(conv, name_at, skip, varargs, args, kwargs)
}

/// [`args_value`] with the names given by `name_at` (None: past the named
/// positional parameters).
pub(crate) fn args_by_name(
    conv: &mut Converter,
    name_at: impl Fn(usize) -> Option<String>,
    skip: usize,
    varargs: Option<&str>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> Value {
    let mut arg_map = Map::new();
    let mut extra = Vec::new();
    for (i, a) in args.iter().enumerate().skip(skip) {
        match name_at(i - skip) {
            Some(key) => {
                arg_map.insert(key, conv.top(&a));
            }
            None => extra.push(conv.top(&a)),
        }
    }
    if !extra.is_empty() {
        arg_map.insert(varargs.unwrap_or("args").to_string(), Value::Array(extra));
    }
    if let Some(kw) = kwargs {
        for (k, v) in kw.iter() {
            let key = k
                .cast::<PyString>()
                .map(lossy_string)
                .unwrap_or_else(|_| qualified_name(&k));
            arg_map.insert(key, conv.top(&v));
        }
    }
    Value::Object(arg_map)
}

/// A finished (or stopped) tool call, before it is placed in its span.
pub(crate) struct ToolEvent<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: Option<&'a str>,
    pub(crate) status: ResultStatus,
    pub(crate) error_type: Option<String>,
    pub(crate) duration_ns: u64,
    pub(crate) payload: BTreeMap<PayloadPart, Value>,
    pub(crate) capture: Option<CaptureMode>,
    pub(crate) metadata: Option<Value>,
    pub(crate) risk_flags: Option<Vec<String>>,
    pub(crate) otel: Option<(String, String)>,
}

impl ToolEvent<'_> {
    pub(crate) fn build(self, ctx: &PySpanContext) -> Event {
        let body = Body::ToolCall(ToolCall {
            tool: ToolInfo {
                name: self.name.to_string(),
                version: self.version.map(str::to_string),
                ..Default::default()
            },
            outcome: Outcome {
                result_status: Some(self.status),
                duration_ms: Some(self.duration_ns as f64 / 1e6),
                error_type: self.error_type,
            },
            ..Default::default()
        });
        // Event::new reads the clock: the call started `duration_ns` before.
        let mut event = Event::new(body);
        event.ts = Timestamp(
            event
                .ts
                .0
                .saturating_sub(i64::try_from(self.duration_ns).unwrap_or(0)),
        );
        event.payload = self.payload;
        event.capture = self.capture;
        event.metadata = self.metadata.map(|m| match m {
            Value::Object(o) => o,
            other => {
                let mut o = Map::new();
                o.insert("value".into(), other);
                o
            }
        });
        if let Some(flags) = self.risk_flags {
            event.risk.flags = flags;
        }
        if let Some((trace_id, span_id)) = self.otel {
            event.otel = Some(OtelContext { trace_id, span_id });
        }
        ctx.place(&mut event);
        event
    }
}

/// Which policy checks calls of one tool need before they run (see
/// `AuditLog.gate`). Opaque; keep it with the tool.
#[pyclass(frozen, name = "ToolGate", module = "agent_audit._native")]
pub struct PyToolGate {
    pub(crate) gate: ToolGate,
    pub(crate) policy: Arc<PolicyEngine>,
}

/// A policy rule's decision about a call before it ran: `block` or
/// `require_approval`, with the rule and what it adds.
#[pyclass(frozen, name = "PolicyDecision", module = "agent_audit._native")]
pub struct PyPolicyDecision {
    pre: PreVerdict,
    verdict: Verdict,
    args: Value,
    tool: String,
}

#[pymethods]
impl PyPolicyDecision {
    /// `block` or `require_approval`.
    #[getter]
    fn action(&self) -> &'static str {
        self.verdict.effect.action.as_str()
    }

    /// The id of the deciding rule.
    #[getter]
    fn rule_id(&self) -> &str {
        &self.verdict.rule_id
    }

    /// Why (the rule's description, never the matched text).
    #[getter]
    fn reason(&self) -> &str {
        &self.verdict.reason
    }

    /// The rule's family.
    #[getter]
    fn family(&self) -> &str {
        &self.verdict.family
    }

    /// The tool the decision is about.
    #[getter]
    fn tool(&self) -> &str {
        &self.tool
    }

    /// Flags of every rule that matched the call.
    #[getter]
    fn flags(&self) -> Vec<String> {
        self.pre.risk().flags
    }

    /// Score of every rule that matched the call (capped at 100).
    #[getter]
    fn score(&self) -> u32 {
        self.pre.risk().score
    }

    /// The ids of every rule that matched the call.
    #[getter]
    fn rule_ids(&self) -> Vec<String> {
        self.pre
            .verdicts
            .iter()
            .map(|v| v.rule_id.clone())
            .collect()
    }

    /// The arguments as recorded (JSON-shaped, before redaction): what an
    /// approver is shown.
    #[getter]
    fn args<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.args)
    }

    fn __repr__(&self) -> String {
        format!(
            "PolicyDecision(action={}, rule_id={:?}, tool={:?})",
            self.action(),
            self.verdict.rule_id,
            self.tool
        )
    }
}

pub(crate) fn parse_status(s: &str) -> PyResult<ResultStatus> {
    Ok(match s {
        "ok" => ResultStatus::Ok,
        "error" => ResultStatus::Error,
        "timeout" => ResultStatus::Timeout,
        "blocked" => ResultStatus::Blocked,
        "cancelled" => ResultStatus::Cancelled,
        other => {
            return Err(InvalidEventError::new_err(format!(
                "status must be ok, error, timeout, blocked or cancelled, got {other:?}"
            )));
        }
    })
}

pub(crate) fn parse_capture(s: Option<&str>) -> PyResult<Option<CaptureMode>> {
    s.map(CaptureMode::parse).transpose().py_err()
}

impl PyAuditLog {
    pub(crate) fn send(&self, py: Python<'_>, event: Event) -> PyResult<bool> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let log = &self.inner;
        let result = if self.blocking {
            py.detach(|| log.emit(event))
        } else {
            log.emit(event)
        };
        result.py_err()
    }

    pub(crate) fn error_part(&self, error: &Bound<'_, PyBaseException>) -> (String, Value) {
        let type_name = qualified_name(error.as_any());
        let message = match error.str() {
            Ok(s) => lossy_string(&s),
            Err(_) => "<str() failed>".into(),
        };
        let mut m = Map::with_capacity(2);
        m.insert("type".into(), Value::String(type_name.clone()));
        m.insert("message".into(), Value::String(message));
        (type_name, Value::Object(m))
    }
}

#[pymethods]
impl PyAuditLog {
    /// Opens a new stream with the core's options (`dir`, `signing_key`,
    /// `tenant_id` ... as accepted by `LogOptions`) and starts its writer.
    /// `max_depth`, `max_items` and `max_bytes` bound the copy of each
    /// value on the caller's thread.
    #[new]
    #[pyo3(signature = (options, *, max_depth=32, max_items=1000, max_bytes=8388608, max_repr=1000))]
    fn new(
        py: Python<'_>,
        options: &Bound<'_, PyDict>,
        max_depth: usize,
        max_items: usize,
        max_bytes: usize,
        max_repr: usize,
    ) -> PyResult<Self> {
        let value = to_value(options.as_any(), Limits::default());
        if value.get("$type").is_some() {
            return Err(ConfigError::new_err("options must be a dict"));
        }
        let mut options = LogOptions::from_value(value).py_err()?;
        let export = match options.export.take() {
            Some(url) => Some(export_config(&url, options.export_name.take())?),
            None => None,
        };
        let config = options.into_config().py_err()?;
        let blocking = matches!(config.overflow, Overflow::Block(_));
        let log_dir = config.dir.clone();
        let inner = py.detach(|| AuditLog::open(config)).py_err()?;
        let exporter = match export {
            None => None,
            Some(target) => {
                // Failures after this (receiver down ...) are retried on the
                // exporter's thread, reported once per outage on stderr and
                // counted in `export_stats()`; only a thread that cannot
                // start fails here.
                let spawned =
                    spawn_exporter(log_dir, ExportTarget::from(target), ShipOptions::default());
                match spawned {
                    Ok(h) => Some(Arc::new(h)),
                    Err(e) => {
                        py.detach(|| inner.shutdown(Duration::from_secs(1)));
                        return Err(AuditIOError::new_err(format!(
                            "cannot start the exporter: {e}"
                        )));
                    }
                }
            }
        };
        Ok(PyAuditLog {
            inner,
            blocking,
            abandoned: AtomicBool::new(false),
            limits: Limits {
                max_depth: max_depth.max(1),
                max_items: max_items.max(1),
                max_bytes,
                max_repr: max_repr.max(16),
            },
            exporter: Mutex::new(exporter),
        })
    }

    /// Records one finished tool call. `names` are the positional
    /// parameter names (after `skip` leading ones such as `self`), extra
    /// positional arguments go under `varargs`, keyword arguments by
    /// name. Returns False when the event was not queued (queue full,
    /// log closed or abandoned); never raises for those.
    #[pyo3(signature = (ctx, name, version, names, skip, varargs, args, kwargs, status, result, error, duration_ns, capture=None, metadata=None, risk_flags=None, otel=None))]
    #[allow(clippy::too_many_arguments)]
    fn tool_call(
        &self,
        py: Python<'_>,
        ctx: &PySpanContext,
        name: &str,
        version: Option<&str>,
        names: &Bound<'_, PyTuple>,
        skip: usize,
        varargs: Option<&str>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        status: &str,
        result: Option<&Bound<'_, PyAny>>,
        error: Option<&Bound<'_, PyBaseException>>,
        duration_ns: u64,
        capture: Option<&str>,
        metadata: Option<&Bound<'_, PyAny>>,
        risk_flags: Option<Vec<String>>,
        otel: Option<(String, String)>,
    ) -> PyResult<bool> {
        let status = parse_status(status)?;
        let capture = parse_capture(capture)?;
        let mut conv = Converter::new(self.limits);
        let arg_value = args_value(&mut conv, names, skip, varargs, args, kwargs);
        let mut payload = BTreeMap::new();
        payload.insert(PayloadPart::Args, arg_value);
        let mut error_type = None;
        if status == ResultStatus::Ok {
            let v = match result {
                Some(r) => conv.top(r),
                None => Value::Null,
            };
            payload.insert(PayloadPart::Result, v);
        } else if let Some(e) = error {
            let (t, part) = self.error_part(e);
            error_type = Some(t);
            payload.insert(PayloadPart::Error, part);
        }
        let event = ToolEvent {
            name,
            version,
            status,
            error_type,
            duration_ns,
            payload,
            capture,
            metadata: metadata.map(|m| conv.top(m)),
            risk_flags,
            otel,
        }
        .build(ctx);
        match self.send(py, event) {
            Ok(queued) => Ok(queued),
            // Logging after shutdown or a malformed OTel id must not
            // break the tool: report it as not queued.
            Err(_) => Ok(false),
        }
    }

    /// Records a call of `spec`'s tool that returned `result`. Returns
    /// False when the event was not queued; never raises for that.
    #[pyo3(signature = (spec, ctx, args, kwargs, result, duration_ns, otel=None))]
    #[allow(clippy::too_many_arguments)]
    fn tool_ok(
        &self,
        py: Python<'_>,
        spec: &PyToolSpec,
        ctx: &PySpanContext,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        result: &Bound<'_, PyAny>,
        duration_ns: u64,
        otel: Option<(String, String)>,
    ) -> bool {
        let ended = Ended::Returned(result);
        self.record_tool(py, spec, ctx, args, kwargs, ended, duration_ns, otel)
    }

    /// Records a call of `spec`'s tool that raised `error`; `status` is
    /// error, timeout, cancelled or blocked. Returns False when the event
    /// was not queued.
    #[pyo3(signature = (spec, ctx, args, kwargs, status, error, duration_ns, otel=None))]
    #[allow(clippy::too_many_arguments)]
    fn tool_error(
        &self,
        py: Python<'_>,
        spec: &PyToolSpec,
        ctx: &PySpanContext,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        status: &str,
        error: &Bound<'_, PyBaseException>,
        duration_ns: u64,
        otel: Option<(String, String)>,
    ) -> PyResult<bool> {
        let ended = Ended::Raised(parse_status(status)?, error);
        Ok(self.record_tool(py, spec, ctx, args, kwargs, ended, duration_ns, otel))
    }

    /// The policy gate of a tool: None when no policy is loaded or no
    /// rule that blocks or asks for approval can match calls of `name`
    /// (the tool then skips the check). Compute it once per tool.
    pub(crate) fn gate(&self, name: &str) -> Option<PyToolGate> {
        let policy = self.inner.policy()?;
        let gate = policy.gate(name);
        (!gate.is_open()).then(|| PyToolGate {
            gate,
            policy: policy.clone(),
        })
    }

    /// The check before a gated tool runs, on the caller's thread: copies
    /// the arguments as `tool_call` does and asks the policy. Returns the
    /// decision when a rule blocks the call or asks for approval, else
    /// None (the call goes ahead).
    #[pyo3(signature = (gate, ctx, name, names, skip, varargs, args, kwargs))]
    #[allow(clippy::too_many_arguments)]
    fn pre_check(
        &self,
        gate: &PyToolGate,
        ctx: &PySpanContext,
        name: &str,
        names: &Bound<'_, PyTuple>,
        skip: usize,
        varargs: Option<&str>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Option<PyPolicyDecision> {
        let mut conv = Converter::new(self.limits);
        let arg_value = args_value(&mut conv, names, skip, varargs, args, kwargs);
        let pre = gate.policy.pre_check(
            &gate.gate,
            name,
            Some(ctx.trace_id),
            Some(ctx.span_id),
            &arg_value,
        );
        let verdict = pre.decision.clone()?;
        Some(PyPolicyDecision {
            pre,
            verdict,
            args: arg_value,
            tool: name.to_string(),
        })
    }

    /// Records a tool call that `decision` stopped before it ran: the
    /// tool's event with status `blocked` (its arguments, and `error`,
    /// the exception raised to the caller) and the `policy` record.
    /// Returns False when not queued; never raises for logging trouble.
    #[pyo3(signature = (decision, ctx, version, error, duration_ns, capture=None, metadata=None, risk_flags=None, otel=None))]
    #[allow(clippy::too_many_arguments)]
    fn blocked(
        &self,
        py: Python<'_>,
        decision: &PyPolicyDecision,
        ctx: &PySpanContext,
        version: Option<&str>,
        error: &Bound<'_, PyBaseException>,
        duration_ns: u64,
        capture: Option<&str>,
        metadata: Option<&Bound<'_, PyAny>>,
        risk_flags: Option<Vec<String>>,
        otel: Option<(String, String)>,
    ) -> PyResult<bool> {
        let capture = parse_capture(capture)?;
        let mut conv = Converter::new(self.limits);
        let (error_type, error_part) = self.error_part(error);
        let mut payload = BTreeMap::new();
        payload.insert(PayloadPart::Args, decision.args.clone());
        payload.insert(PayloadPart::Error, error_part);
        let event = ToolEvent {
            name: &decision.tool,
            version,
            status: ResultStatus::Blocked,
            error_type: Some(error_type),
            duration_ns,
            payload,
            capture,
            metadata: metadata.map(|m| conv.top(m)),
            risk_flags,
            otel,
        }
        .build(ctx);
        let mut queued = true;
        for record in decision.pre.blocked_records(event) {
            queued &= self.send(py, record).unwrap_or(false);
        }
        Ok(queued)
    }

    /// Records the answer to an approval `decision` asked for: a
    /// `human_review` (approved | denied | timeout) next to the tool's
    /// span `ctx`, with the reviewer, the reason (erasable) and how long
    /// the answer took. Returns False when not queued.
    #[pyo3(signature = (decision, ctx, outcome, reviewer=None, reason=None, wait_ns=0))]
    #[allow(clippy::too_many_arguments)]
    fn review(
        &self,
        py: Python<'_>,
        decision: &PyPolicyDecision,
        ctx: &PySpanContext,
        outcome: &str,
        reviewer: Option<String>,
        reason: Option<String>,
        wait_ns: u64,
    ) -> PyResult<bool> {
        if !matches!(outcome, "approved" | "denied" | "timeout") {
            return Err(InvalidEventError::new_err(format!(
                "an approval is approved, denied or timeout, got {outcome:?}"
            )));
        }
        let mut subject = Event::new(Body::ToolCall(ToolCall {
            tool: ToolInfo {
                name: decision.tool.clone(),
                ..Default::default()
            },
            ..Default::default()
        }));
        ctx.place(&mut subject);
        let record = PolicyEngine::review_event(
            &decision.verdict,
            &subject,
            outcome,
            reviewer,
            reason,
            wait_ns as f64 / 1e6,
        );
        Ok(self.send(py, record).unwrap_or(false))
    }

    /// Sets the function called with each `alert` verdict (a dict:
    /// rule_id, reason, flags, score, trace_id, span_id, tool), or None.
    /// It runs on a thread of its own, never the agent's; what it raises
    /// is reported as unraisable and does not stop later alerts.
    #[pyo3(signature = (handler))]
    fn set_alert_handler(&self, handler: Option<Py<PyAny>>) {
        let Some(handler) = handler else {
            self.inner.set_alert_handler(None);
            return;
        };
        let handler = Arc::new(handler);
        self.inner
            .set_alert_handler(Some(Arc::new(move |alert: &Alert| {
                let value = alert.to_json();
                // The interpreter may be shutting down: then skip it.
                let _ = Python::try_attach(|py| {
                    let call = to_py(py, &value).and_then(|arg| handler.call1(py, (arg,)));
                    if let Err(e) = call {
                        e.write_unraisable(py, Some(handler.bind(py)));
                    }
                });
            })));
    }

    /// The version of the policy in force (`policy_version` of each
    /// event), or None without a policy.
    #[getter]
    fn policy_version(&self) -> Option<String> {
        self.inner.policy().map(|p| p.version().to_string())
    }

    /// Records an event of any kind a caller may submit. `fields` holds
    /// the kind's fields (and optionally `risk`, `metadata`, `capture`,
    /// `otel`, `principal`, `retention_class`); `payload` the erasable
    /// parts by name (`args`, `result`, `input`, `messages` ...).
    /// `start_ns` (Unix nanoseconds) is when a span-like step began.
    /// Raises `InvalidEventError` for malformed events and `ClosedError`
    /// after shutdown; returns False when the queue was full.
    #[pyo3(signature = (kind, ctx=None, fields=None, payload=None, start_ns=None))]
    fn emit(
        &self,
        py: Python<'_>,
        kind: &str,
        ctx: Option<&PySpanContext>,
        fields: Option<&Bound<'_, PyDict>>,
        payload: Option<&Bound<'_, PyDict>>,
        start_ns: Option<i64>,
    ) -> PyResult<bool> {
        let mut conv = Converter::new(self.limits);
        let mut map = match fields.map(|f| conv.top(f.as_any())) {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(InvalidEventError::new_err("fields must be a dict")),
        };
        for k in ["trace_id", "span_id", "parent_span_id"] {
            if ctx.is_some() && map.contains_key(k) {
                return Err(InvalidEventError::new_err(format!(
                    "{k} comes from the span context; do not pass it as a field"
                )));
            }
        }
        map.insert("kind".into(), Value::String(kind.to_string()));
        if let Some(p) = payload {
            let mut parts = Map::new();
            for (k, v) in p.iter() {
                if v.is_none() {
                    continue;
                }
                let key = k
                    .cast::<PyString>()
                    .map(lossy_string)
                    .map_err(|_| InvalidEventError::new_err("payload part names are strings"))?;
                parts.insert(key, conv.top(&v));
            }
            if !parts.is_empty() {
                map.insert("payload".into(), Value::Object(parts));
            }
        }
        let mut event = event_from_map(&mut map).py_err()?;
        if let Some(ns) = start_ns {
            event.ts = Timestamp(ns);
        }
        if let Some(c) = ctx {
            c.place(&mut event);
        }
        self.send(py, event)
    }

    /// Writes what is queued, checkpoints and syncs it; False if that did
    /// not finish within `timeout` seconds. Releases the GIL meanwhile.
    #[pyo3(signature = (timeout=5.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let t = seconds(timeout)?;
        let log = &self.inner;
        Ok(py.detach(|| log.flush(t)))
    }

    /// Writes what is queued, closes the stream and stops the writer;
    /// False if that did not finish within `timeout` seconds. Idempotent.
    /// With an exporter, it then ships what is left within the rest of
    /// `timeout` (at most half a second while its export attempts are
    /// failing) and stops it; how that went is in `export_stats()`, not
    /// the result.
    /// Releases the GIL meanwhile.
    #[pyo3(signature = (timeout=5.0))]
    fn shutdown(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let t = seconds(timeout)?;
        let log = &self.inner;
        let exporter = self.exporter_handle();
        Ok(py.detach(|| {
            let start = Instant::now();
            let closed = log.shutdown(t);
            if let Some(h) = exporter {
                h.drain_at_shutdown(t.saturating_sub(start.elapsed()));
            }
            closed
        }))
    }

    /// Gives up this handle without touching its writer: for a forked
    /// child, where the parent's writer thread does not exist. The handle
    /// is leaked on purpose so that nothing ever waits for that thread.
    /// The exporter thread did not come along either: its lock is let go
    /// of (the parent's exporter ships the child's stream too).
    fn abandon(&self) {
        if !self.abandoned.swap(true, Ordering::AcqRel) {
            std::mem::forget(self.inner.clone());
            // try_lock: a lock held in the parent at the fork stays held
            // here; then `Drop` lets go of the exporter instead.
            if let Ok(slot) = self.exporter.try_lock()
                && let Some(h) = slot.as_deref()
            {
                h.abandon_after_fork();
            }
        }
    }

    /// How the exporter started with `export=` is doing: a dict with
    /// exporter (its name), state (starting | standby | shipping |
    /// draining | stopped), shipped, batches, failures,
    /// consecutive_failures, last_error and caught_up (whether the drain
    /// at shutdown shipped everything). None without an exporter.
    fn export_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(h) = self.exporter_handle() else {
            return Ok(None);
        };
        let value = serde_json::to_value(h.stats())
            .map_err(|e| AuditIOError::new_err(format!("cannot read the exporter's stats: {e}")))?;
        to_py(py, &value).map(Some)
    }

    /// Writer counters: written, dropped, queued, queued_bytes,
    /// bytes_written, io_errors, checkpoints.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("written", s.written)?;
        d.set_item("dropped", s.dropped)?;
        d.set_item("queued", s.queued)?;
        d.set_item("queued_bytes", s.queued_bytes)?;
        d.set_item("bytes_written", s.bytes_written)?;
        d.set_item("io_errors", s.io_errors)?;
        d.set_item("checkpoints", s.checkpoints)?;
        Ok(d)
    }

    /// Converts a value as the hot path does, and returns the JSON-shaped
    /// result: what would be recorded for it (before redaction).
    fn capture_value<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &to_value(value, self.limits))
    }

    /// The id of this writer's stream.
    #[getter]
    fn stream_id(&self) -> &str {
        self.inner.stream_id()
    }

    /// The directory of this writer's stream.
    #[getter]
    fn stream_dir(&self) -> String {
        self.inner.stream_dir().display().to_string()
    }

    /// The id of the signing key.
    #[getter]
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }

    /// Whether the log was shut down (or abandoned after a fork).
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed() || self.abandoned.load(Ordering::Relaxed)
    }

    fn __repr__(&self) -> String {
        format!("AuditLog(stream_id={})", self.inner.stream_id())
    }
}

impl PyAuditLog {
    fn exporter_handle(&self) -> Option<Arc<ExporterHandle>> {
        if self.abandoned.load(Ordering::Relaxed) {
            return None;
        }
        self.exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for PyAuditLog {
    fn drop(&mut self) {
        // In a forked child, never wait for the exporter thread: it did not
        // come along (idempotent after `abandon`).
        if self.abandoned.load(Ordering::Relaxed) {
            let slot = self.exporter.get_mut().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = slot.as_deref() {
                h.abandon_after_fork();
            }
        }
        // Otherwise dropping the exporter stops it (bounded, 1 s) when it
        // still runs: a log that was never shut down.
    }
}

fn seconds(timeout: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout.max(0.0))
        .map_err(|_| PyValueError::new_err(format!("timeout must be seconds, got {timeout}")))
}
