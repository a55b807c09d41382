//! The one place where core errors become Python exceptions: every
//! [`ErrorKind`] maps to exactly one class under `agent_audit.AuditError`,
//! and the core's cause chain (`source()`) becomes `__cause__`.

use agent_audit::{AuditError as CoreError, ErrorKind};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError};
use pyo3::prelude::*;

create_exception!(
    agent_audit,
    AuditError,
    PyException,
    "Base class of every error agent-audit raises."
);
create_exception!(
    agent_audit,
    ConfigError,
    AuditError,
    "An option or setting is invalid."
);
create_exception!(
    agent_audit,
    InvalidEventError,
    AuditError,
    "An event handed to the log is malformed (bad field, non-finite number, unknown kind)."
);
create_exception!(
    agent_audit,
    SigningKeyError,
    AuditError,
    "A signing or verifying key is missing, unreadable or malformed."
);
create_exception!(
    agent_audit,
    AuditIOError,
    AuditError,
    "The operating system refused an I/O operation of the log."
);
create_exception!(
    agent_audit,
    ClosedError,
    AuditError,
    "The audit log has been shut down."
);
create_exception!(
    agent_audit,
    ParseError,
    AuditError,
    "JSON text could not be parsed."
);
create_exception!(
    agent_audit,
    InvalidLogError,
    AuditError,
    "A log directory or file cannot be used at all."
);
create_exception!(
    agent_audit,
    ProofError,
    AuditError,
    "A Merkle proof does not check out or cannot be built."
);
create_exception!(
    agent_audit,
    NotFoundError,
    AuditError,
    "A trace, event or stream that was asked for does not exist."
);

/// The exception for a core error, with its causes chained as `__cause__`.
pub fn to_py_err(e: CoreError) -> PyErr {
    let message = e.message().to_string();
    let err = match e.kind() {
        ErrorKind::Config => ConfigError::new_err(message),
        ErrorKind::InvalidEvent => InvalidEventError::new_err(message),
        ErrorKind::Key => SigningKeyError::new_err(message),
        ErrorKind::Io => AuditIOError::new_err(message),
        ErrorKind::Closed => ClosedError::new_err(message),
        ErrorKind::Parse => ParseError::new_err(message),
        ErrorKind::InvalidLog => InvalidLogError::new_err(message),
        ErrorKind::Proof => ProofError::new_err(message),
        ErrorKind::NotFound => NotFoundError::new_err(message),
        // `ErrorKind` is non-exhaustive: a kind added later is still an
        // AuditError, named in the message until it gets its own class.
        other => AuditError::new_err(format!("[{}] {message}", other.as_str())),
    };
    if let Some(source) = std::error::Error::source(&e) {
        Python::attach(|py| err.set_cause(py, Some(cause_chain(source))));
    }
    err
}

/// One Python exception per link of a Rust cause chain: OS errors become
/// `OSError(errno, message)`, anything else a plain `Exception`.
fn cause_chain(source: &(dyn std::error::Error + 'static)) -> PyErr {
    let err = match source.downcast_ref::<std::io::Error>() {
        Some(io) => match io.raw_os_error() {
            Some(code) => PyOSError::new_err((code, io.to_string())),
            None => PyOSError::new_err(io.to_string()),
        },
        None => match source.downcast_ref::<CoreError>() {
            Some(core) => return to_py_err_ref(core),
            None => PyException::new_err(source.to_string()),
        },
    };
    if let Some(next) = source.source() {
        Python::attach(|py| err.set_cause(py, Some(cause_chain(next))));
    }
    err
}

fn to_py_err_ref(e: &CoreError) -> PyErr {
    let mut copy = CoreError::new(e.kind(), e.message());
    if let Some(s) = std::error::Error::source(e) {
        copy = copy.with_source(StringError(s.to_string()));
    }
    to_py_err(copy)
}

#[derive(Debug)]
struct StringError(String);

impl std::fmt::Display for StringError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StringError {}

/// Extension for `Result<T, CoreError>`: `.py()?` in binding code.
pub trait IntoPyResult<T> {
    /// Maps the core error to its Python exception.
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, CoreError> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}
