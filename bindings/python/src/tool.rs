//! The hot path of `@audit.tool`: what a decorated function's events
//! share, converted once at decoration ([`PyToolSpec`]), and a decorated
//! sync function itself ([`PyToolFunction`]), whose call is one native
//! call: read the log, open the tool's span in the context variable, time
//! the call, close the span, copy the arguments and the result or
//! exception and queue the event. It behaves as the function it wraps
//! does (`functools.wraps` attributes, binding as a method, pickling by
//! qualified name). The Python layer keeps what is rare or needs Python:
//! per-call overrides (`audit_extra`), the policy check of gated tools,
//! async and generator tools (which use [`PyToolSpec`] through
//! `AuditLog.tool_ok` and `AuditLog.tool_error`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use agent_audit::record::ResultStatus;
use agent_audit::{CaptureMode, PayloadPart};
use pyo3::PyTraverseError;
use pyo3::exceptions::PyBaseException;
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};

use crate::convert::Converter;
use crate::log::{PyAuditLog, PySpanContext, ToolEvent, args_by_name, parse_capture, parse_status};

/// What every event of one decorated function shares, converted once:
/// name, version, parameter names, capture mode, metadata, risk flags.
#[pyclass(frozen, name = "ToolSpec", module = "agent_audit._native")]
pub struct PyToolSpec {
    name: String,
    version: Option<String>,
    names: Vec<String>,
    skip: usize,
    varargs: Option<String>,
    capture: Option<CaptureMode>,
    // Converted per call, as `tool_call` does: it may be changed later.
    metadata: Option<Py<PyAny>>,
    risk_flags: Option<Vec<String>>,
}

#[pymethods]
impl PyToolSpec {
    /// `names` are the positional parameter names after `skip` leading
    /// ones (`self`, `cls`); extra positional arguments are recorded
    /// under `varargs`. Raises `ConfigError` for an unknown `capture`.
    #[new]
    #[pyo3(signature = (name, version, names, skip, varargs, capture=None, metadata=None, risk_flags=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        version: Option<String>,
        names: Vec<String>,
        skip: usize,
        varargs: Option<String>,
        capture: Option<&str>,
        metadata: Option<Py<PyAny>>,
        risk_flags: Option<Vec<String>>,
    ) -> PyResult<Self> {
        Ok(PyToolSpec {
            name,
            version,
            names,
            skip,
            varargs,
            capture: parse_capture(capture)?,
            metadata,
            risk_flags,
        })
    }

    /// The tool's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.metadata)
    }
}

/// How a call ended.
pub(crate) enum Ended<'a, 'py> {
    Returned(&'a Bound<'py, PyAny>),
    Raised(ResultStatus, &'a Bound<'py, PyBaseException>),
}

impl PyAuditLog {
    /// Queues the `tool_call` event of one finished call of `spec`'s
    /// tool; false when it was not queued. Never raises.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_tool(
        &self,
        py: Python<'_>,
        spec: &PyToolSpec,
        ctx: &PySpanContext,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        ended: Ended<'_, '_>,
        duration_ns: u64,
        otel: Option<(String, String)>,
    ) -> bool {
        let mut conv = Converter::new(self.limits);
        let name_at = |i: usize| spec.names.get(i).cloned();
        let kwargs = kwargs.filter(|k| !k.is_empty());
        let args = args_by_name(
            &mut conv,
            name_at,
            spec.skip,
            spec.varargs.as_deref(),
            args,
            kwargs,
        );
        let mut payload = BTreeMap::new();
        payload.insert(PayloadPart::Args, args);
        let (status, error_type) = match ended {
            Ended::Returned(result) => {
                payload.insert(PayloadPart::Result, conv.top(result));
                (ResultStatus::Ok, None)
            }
            Ended::Raised(status, error) => {
                let (t, part) = self.error_part(error);
                payload.insert(PayloadPart::Error, part);
                (status, Some(t))
            }
        };
        let event = ToolEvent {
            name: &spec.name,
            version: spec.version.as_deref(),
            status,
            error_type,
            duration_ns,
            payload,
            capture: spec.capture,
            metadata: spec.metadata.as_ref().map(|m| conv.top(m.bind(py))),
            risk_flags: spec.risk_flags.clone(),
            otel,
        }
        .build(ctx);
        // Logging after shutdown or a malformed OTel id must not break
        // the tool: reported as not queued.
        self.send(py, event).unwrap_or(false)
    }
}

/// What every sync tool call needs from the Python layer, once per
/// process: the state holding the log (`state.log`, `state.not_logged`),
/// the context variable of the current span, and the functions that
/// give the OpenTelemetry ids and the status of an exception.
#[pyclass(frozen, name = "ToolHooks", module = "agent_audit._native")]
pub struct PyToolHooks {
    state: Py<PyAny>,
    get: Py<PyAny>,
    set: Py<PyAny>,
    reset: Py<PyAny>,
    otel_ids: Py<PyAny>,
    // The globals of `otel_ids`'s module: its `_otel_fast` tuple (see
    // agent_audit/context.py) answers the usual "no OTel span" natively.
    otel_globals: Py<PyDict>,
    otel_fast: PyOnceLock<OtelFast>,
    modules: Py<PyDict>,
    status_of: Py<PyAny>,
    method_type: Py<PyAny>,
}

/// `agent_audit.context._otel_fast`, unpacked.
struct OtelFast {
    trace_globals: Py<PyDict>,
    get_current_span: Py<PyAny>,
    context_globals: Py<PyDict>,
    runtime: Py<PyAny>,
    var_get: Py<PyAny>,
    key: Py<PyAny>,
}

impl OtelFast {
    fn new(tuple: &Bound<'_, PyAny>) -> PyResult<Self> {
        let t = tuple.cast::<PyTuple>()?;
        let item = |i: usize| t.get_item(i).map(Bound::unbind);
        let dict = |i: usize| {
            t.get_item(i)
                .and_then(|d| d.cast_into::<PyDict>().map_err(PyErr::from))
                .map(Bound::unbind)
        };
        Ok(OtelFast {
            trace_globals: dict(0)?,
            get_current_span: item(1)?,
            context_globals: dict(2)?,
            runtime: item(3)?,
            var_get: item(4)?,
            key: item(5)?,
        })
    }

    /// Whether OpenTelemetry's API is as probed and its current context
    /// holds no span.
    fn no_span(&self, py: Python<'_>) -> PyResult<bool> {
        let same = |globals: &Py<PyDict>, name: &Bound<'_, PyString>, expected: &Py<PyAny>| {
            let found = globals.bind(py).get_item(name)?;
            PyResult::Ok(found.is_some_and(|f| f.is(expected)))
        };
        if !same(
            &self.trace_globals,
            intern!(py, "get_current_span"),
            &self.get_current_span,
        )? || !same(
            &self.context_globals,
            intern!(py, "_RUNTIME_CONTEXT"),
            &self.runtime,
        )? {
            return Ok(false);
        }
        let current = self.var_get.call0(py)?.into_bound(py);
        let current = current.cast::<PyDict>()?;
        if current.is_empty() {
            return Ok(true);
        }
        Ok(current
            .get_item(self.key.bind(py))?
            .is_none_or(|s| s.is_none()))
    }
}

#[pymethods]
impl PyToolHooks {
    /// `current` is the `ContextVar` of the current span; `otel_ids()`
    /// returns the active OpenTelemetry (trace id, span id) or None;
    /// `status_of(exc)` the result status an exception stands for.
    #[new]
    fn new(
        state: &Bound<'_, PyAny>,
        current: &Bound<'_, PyAny>,
        otel_ids: &Bound<'_, PyAny>,
        status_of: Py<PyAny>,
    ) -> PyResult<Self> {
        let py = state.py();
        Ok(PyToolHooks {
            state: state.clone().unbind(),
            get: current.getattr("get")?.unbind(),
            set: current.getattr("set")?.unbind(),
            reset: current.getattr("reset")?.unbind(),
            otel_globals: otel_ids
                .getattr("__globals__")?
                .cast_into::<PyDict>()?
                .unbind(),
            otel_ids: otel_ids.clone().unbind(),
            otel_fast: PyOnceLock::new(),
            modules: py
                .import("sys")?
                .getattr("modules")?
                .cast_into::<PyDict>()?
                .unbind(),
            status_of,
            method_type: py.import("types")?.getattr("MethodType")?.unbind(),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // (The OpenTelemetry objects in `otel_fast` are module globals.)
        for obj in [
            &self.state,
            &self.get,
            &self.set,
            &self.reset,
            &self.otel_ids,
            &self.status_of,
            &self.method_type,
        ] {
            visit.call(obj)?;
        }
        visit.call(&self.otel_globals)?;
        visit.call(&self.modules)
    }
}

impl PyToolHooks {
    /// `otel_ids()`: answered here when OpenTelemetry is not imported or
    /// its current context holds no span, else by the Python function.
    fn otel(&self, py: Python<'_>) -> Option<(String, String)> {
        if self.no_otel_span(py) {
            return None;
        }
        self.otel_ids
            .call0(py)
            .and_then(|v| v.extract::<Option<(String, String)>>(py))
            .unwrap_or(None)
    }

    /// True when surely no OpenTelemetry span is current: the fast path
    /// of `agent_audit.context.otel_ids`, with the same checks.
    fn no_otel_span(&self, py: Python<'_>) -> bool {
        if let Some(fast) = self.otel_fast.get(py) {
            return fast.no_span(py).unwrap_or(false);
        }
        let fast = match self
            .otel_globals
            .bind(py)
            .get_item(intern!(py, "_otel_fast"))
        {
            Ok(Some(f)) => f,
            _ => return false,
        };
        if fast.is_none() {
            // Not probed yet: fine as long as nobody imported it.
            return matches!(
                self.modules
                    .bind(py)
                    .get_item(intern!(py, "opentelemetry.trace")),
                Ok(None)
            );
        }
        // Probed once for the process: its own checks tell when the API
        // is no longer the one probed (then Python answers).
        match OtelFast::new(&fast) {
            Ok(parsed) => self
                .otel_fast
                .get_or_init(py, || parsed)
                .no_span(py)
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    fn status(&self, py: Python<'_>, error: &Bound<'_, PyBaseException>) -> ResultStatus {
        self.status_of
            .call1(py, (error,))
            .ok()
            .and_then(|s| s.extract::<String>(py).ok())
            .and_then(|s| parse_status(&s).ok())
            .unwrap_or(ResultStatus::Error)
    }

    /// `state.not_logged += 1`; never raises.
    fn not_logged(&self, py: Python<'_>) {
        let state = self.state.bind(py);
        let name = intern!(py, "not_logged");
        if let Ok(n) = state.getattr(name).and_then(|n| n.extract::<u64>()) {
            let _ = state.setattr(name, n + 1);
        }
    }
}

/// A function decorated with `@audit.tool` (a sync one): calling it calls
/// the function and records the call, in one native call. Calls that need
/// the Python layer (an `audit_extra` override, a tool a blocking policy
/// rule can match, a log that is not an `AuditLog`) go to
/// `slow(args, kwargs)`. Like a function it has a `__dict__` (for
/// `functools.wraps`: `__name__`, `__doc__`, `__wrapped__` ...), binds
/// as a method, takes weak references and pickles by qualified name.
#[pyclass(
    frozen,
    dict,
    weakref,
    name = "ToolFunction",
    module = "agent_audit._native"
)]
pub struct PyToolFunction {
    spec: Py<PyToolSpec>,
    func: Py<PyAny>,
    slow: Py<PyAny>,
    hooks: Py<PyToolHooks>,
    // Whether an `audit_extra` keyword argument is the caller's override
    // (false when the function takes a parameter of that name).
    pop_extra: bool,
    // Whether a policy rule can block or ask for approval of this tool,
    // for the log at address `gate_log` (kept alive by `gate_ref`, so that
    // the address is not reused while it is compared).
    gate_log: AtomicUsize,
    gated: AtomicBool,
    gate_ref: Mutex<Option<Py<PyAny>>>,
}

#[pymethods]
impl PyToolFunction {
    #[new]
    fn new(
        spec: Py<PyToolSpec>,
        func: Py<PyAny>,
        slow: Py<PyAny>,
        hooks: Py<PyToolHooks>,
        pop_extra: bool,
    ) -> Self {
        PyToolFunction {
            spec,
            func,
            slow,
            hooks,
            pop_extra,
            gate_log: AtomicUsize::new(0),
            gated: AtomicBool::new(false),
            gate_ref: Mutex::new(None),
        }
    }

    /// Calls the tool and records the call. Returns what the tool returns
    /// and raises what it raises; logging trouble is counted in
    /// `state.not_logged`, never raised.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = kwargs.filter(|k| !k.is_empty());
        let hooks = self.hooks.get();
        let log = hooks.state.bind(py).getattr(intern!(py, "log"))?;
        if log.is_none() {
            return self.func.bind(py).call(args, kwargs);
        }
        let slow = || self.slow.bind(py).call1((args, kwargs));
        let Ok(log) = log.cast_into::<PyAuditLog>() else {
            return slow();
        };
        if let Some(kw) = kwargs
            && self.pop_extra
            && kw.contains(intern!(py, "audit_extra"))?
        {
            return slow();
        }
        let spec = self.spec.get();
        if self.gated(log.as_any(), || log.get().gate(&spec.name).is_some()) {
            return slow();
        }

        let parent = hooks.get.call0(py)?;
        let ctx = match parent.bind(py).cast::<PySpanContext>() {
            Ok(p) => p.get().child(),
            Err(_) => PySpanContext::root(),
        };
        let ctx = Bound::new(py, ctx)?;
        let token = hooks.set.call1(py, (&ctx,))?;
        let t0 = Instant::now();
        let out = self.func.bind(py).call(args, kwargs);
        let duration_ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if hooks.reset.call1(py, (token,)).is_err() {
            // Not in the context the span was opened in (cannot happen to
            // a sync call): set the caller's span back all the same.
            hooks.set.call1(py, (parent,))?;
        }

        // Recorded in the log current now, as the Python path does (a
        // forked child has its own).
        let now = hooks.state.bind(py).getattr(intern!(py, "log"));
        let log = match now.as_ref().map(|l| l.cast::<PyAuditLog>()) {
            Ok(Ok(l)) => l.get(),
            _ => {
                hooks.not_logged(py);
                return out;
            }
        };
        let ctx = ctx.get();
        let queued = match &out {
            Ok(result) => {
                let ended = Ended::Returned(result);
                let otel = hooks.otel(py);
                log.record_tool(py, spec, ctx, args, kwargs, ended, duration_ns, otel)
            }
            Err(err) => {
                let error = err.value(py);
                let ended = Ended::Raised(hooks.status(py, error), error);
                let otel = hooks.otel(py);
                log.record_tool(py, spec, ctx, args, kwargs, ended, duration_ns, otel)
            }
        };
        if !queued {
            hooks.not_logged(py);
        }
        out
    }

    /// Binds like a function: to the instance it is looked up on.
    fn __get__(
        slf: &Bound<'_, Self>,
        obj: Option<&Bound<'_, PyAny>>,
        owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _ = owner;
        match obj {
            None => Ok(slf.clone().into_any().unbind()),
            Some(obj) => {
                let py = slf.py();
                let method_type = slf.get().hooks.get().method_type.bind(py);
                Ok(method_type.call1((slf, obj))?.unbind())
            }
        }
    }

    /// Pickles as a function does: by module and qualified name.
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(slf.getattr(intern!(slf.py(), "__qualname__"))?.unbind())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        let name = slf
            .getattr(intern!(slf.py(), "__qualname__"))
            .map(|n| n.to_string())
            .unwrap_or_else(|_| slf.get().spec.get().name.clone());
        format!("<audit.tool {name} at {:#x}>", slf.as_ptr() as usize)
    }

    // The wrapped function may refer back to this object (a recursive
    // local tool): the collector must see through it. (The `__dict__` is
    // visited and cleared by PyO3.)
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.spec)?;
        visit.call(&self.func)?;
        visit.call(&self.slow)?;
        visit.call(&self.hooks)?;
        if let Ok(slot) = self.gate_ref.try_lock() {
            visit.call(&*slot)?;
        }
        Ok(())
    }
}

impl PyToolFunction {
    /// Whether calls under `log` need the policy check: `compute` asks the
    /// log once per log. (The GIL is held: no other call interleaves.)
    fn gated(&self, log: &Bound<'_, PyAny>, compute: impl FnOnce() -> bool) -> bool {
        let addr = log.as_ptr() as usize;
        if self.gate_log.load(Ordering::Acquire) == addr {
            return self.gated.load(Ordering::Acquire);
        }
        let gated = compute();
        let old = {
            let mut slot = self.gate_ref.lock().unwrap_or_else(|p| p.into_inner());
            self.gated.store(gated, Ordering::Release);
            self.gate_log.store(addr, Ordering::Release);
            slot.replace(log.clone().unbind())
        };
        // The previous log may be freed here: outside the lock.
        drop(old);
        gated
    }
}
