//! `agent_audit._native`: the Python binding of the agent-audit core.
//!
//! Thin on purpose: it copies Python values into owned JSON values
//! ([`convert`]), builds the core's events ([`log`]) and maps the core's
//! errors to one exception class per kind ([`error`]). The user-facing
//! API (decorators, context managers, context propagation, exit and fork
//! hooks) is the pure-Python package in `python/agent_audit`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod convert;
pub mod error;
pub mod log;
pub mod tool;

// Events are allocated on the agent's thread and freed on the writer's:
// with glibc's allocator that contends on the arena lock (a futex wake per
// free); mimalloc frees across threads without it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
pub mod _native {
    #[pymodule_export]
    use crate::error::{
        AuditError, AuditIOError, ClosedError, ConfigError, InvalidEventError, InvalidLogError,
        NotFoundError, ParseError, ProofError, SigningKeyError,
    };
    #[pymodule_export]
    use crate::log::{PyAuditLog, PyPolicyDecision, PySpanContext, PyToolGate};
    #[pymodule_export]
    use crate::tool::{PyToolFunction, PyToolHooks, PyToolSpec};

    use std::path::PathBuf;

    use agent_audit::keys::PublicKey;
    use agent_audit::trace::{TraceFilter, list_traces, show_trace};
    use agent_audit::verify::{VerifyOptions, verify_log};
    use agent_audit::{AuditError as CoreError, ErrorKind, Timestamp};
    use pyo3::prelude::*;
    use pyo3::types::PyList;

    use crate::convert::{Limits, to_py, to_value};
    use crate::error::IntoPyResult;

    fn json_err(e: serde_json::Error) -> CoreError {
        CoreError::new(ErrorKind::InvalidLog, e.to_string()).with_source(e)
    }

    /// Verifies every stream of a log directory and returns the report
    /// (streams, findings, records, plus `tampered` and `exit_code`).
    /// `trusted_keys` are paths of PEM public keys every stream must use.
    /// Raises `InvalidLogError` when the input cannot be used at all.
    #[pyfunction]
    #[pyo3(signature = (path, trusted_keys=None))]
    fn verify<'py>(
        py: Python<'py>,
        path: PathBuf,
        trusted_keys: Option<Vec<PathBuf>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let value = py
            .detach(|| {
                let keys = trusted_keys
                    .unwrap_or_default()
                    .iter()
                    .map(|p| PublicKey::load(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let report = verify_log(&path, &VerifyOptions { trusted_keys: keys })?;
                let mut v = serde_json::to_value(&report).map_err(json_err)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("tampered".into(), report.is_tampered().into());
                    o.insert("exit_code".into(), report.exit_code().into());
                }
                Ok::<_, CoreError>(v)
            })
            .py_err()?;
        to_py(py, &value)
    }

    /// The traces of a log, oldest first, as dicts (trace_id, task_kind,
    /// started_at, ended_at, outcome, steps, risk_flags, risk_score).
    #[pyfunction]
    #[pyo3(signature = (path, flag=None, since=None))]
    fn traces<'py>(
        py: Python<'py>,
        path: PathBuf,
        flag: Option<String>,
        since: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let value = py
            .detach(|| {
                let since = since.as_deref().map(Timestamp::parse_rfc3339).transpose()?;
                let list = list_traces(&path, &TraceFilter { flag, since })?;
                serde_json::to_value(&list).map_err(json_err)
            })
            .py_err()?;
        to_py(py, &value)
    }

    /// The trace document of one trace (DESIGN.md, `show --json`).
    /// Raises `NotFoundError` when the log has no such trace.
    #[pyfunction]
    fn show<'py>(py: Python<'py>, path: PathBuf, trace_id: String) -> PyResult<Bound<'py, PyAny>> {
        let value = py.detach(|| show_trace(&path, &trace_id)).py_err()?;
        to_py(py, &value)
    }

    /// Runs the `agent-audit` command line with `args` (without the
    /// program name) and returns its exit code. Same code as the binary.
    #[pyfunction]
    fn run_cli(py: Python<'_>, args: Vec<String>) -> u8 {
        let argv: Vec<String> = std::iter::once("agent-audit".to_string())
            .chain(args)
            .collect();
        py.detach(|| agent_audit_cli::run_cli(argv))
    }

    /// Draws a new key for trace and span ids; call in a forked child
    /// before it makes any id, so it never repeats its parent's.
    #[pyfunction]
    fn reseed_after_fork() {
        agent_audit::ids::reseed_after_fork();
    }

    /// Converts a value as the hot path does (default bounds) and returns
    /// the JSON-shaped result.
    #[pyfunction]
    fn capture_value<'py>(
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &to_value(value, Limits::default()))
    }

    /// The core's version.
    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add(
            "ERROR_KINDS",
            PyList::new(
                m.py(),
                [
                    "CONFIG",
                    "INVALID_EVENT",
                    "KEY",
                    "IO",
                    "CLOSED",
                    "PARSE",
                    "INVALID_LOG",
                    "PROOF",
                    "NOT_FOUND",
                ],
            )?,
        )?;
        Ok(())
    }
}
