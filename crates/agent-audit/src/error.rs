//! The one error type of the core, with a stable [`ErrorKind`] that each
//! binding maps exhaustively to its own exception class (Python) or error
//! code (Node). Errors keep their cause chain through `source()`.

use std::fmt;

/// The coarse class of an [`AuditError`]; bindings map each to one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value is invalid (bad directory, bad option, bad pattern).
    Config,
    /// An event handed to the log is malformed (bad field, non-finite number, unknown kind).
    InvalidEvent,
    /// A signing or verifying key is missing, unreadable or malformed.
    Key,
    /// An operating-system I/O error.
    Io,
    /// The log has been shut down; nothing more can be written to it.
    Closed,
    /// JSON text could not be parsed (strict reader).
    Parse,
    /// A log directory or file cannot be used at all (not a log, unreadable).
    InvalidLog,
    /// A Merkle proof does not check out, or cannot be built.
    Proof,
    /// A trace, event or stream that was asked for does not exist.
    NotFound,
}

impl ErrorKind {
    /// Stable upper-snake name, used for the JS `ERR_AUDIT_*` codes.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "CONFIG",
            ErrorKind::InvalidEvent => "INVALID_EVENT",
            ErrorKind::Key => "KEY",
            ErrorKind::Io => "IO",
            ErrorKind::Closed => "CLOSED",
            ErrorKind::Parse => "PARSE",
            ErrorKind::InvalidLog => "INVALID_LOG",
            ErrorKind::Proof => "PROOF",
            ErrorKind::NotFound => "NOT_FOUND",
        }
    }
}

/// Every fallible operation of the core returns this.
#[derive(Debug)]
pub struct AuditError {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl AuditError {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AuditError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause, kept for `source()`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// An I/O error with what was being done and to which path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        AuditError::new(ErrorKind::Io, format!("{context}: {source}")).with_source(source)
    }

    /// Shorthand for an [`ErrorKind::InvalidEvent`] error.
    pub fn invalid_event(message: impl Into<String>) -> Self {
        AuditError::new(ErrorKind::InvalidEvent, message)
    }

    /// Shorthand for an [`ErrorKind::Config`] error.
    pub fn config(message: impl Into<String>) -> Self {
        AuditError::new(ErrorKind::Config, message)
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AuditError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::jcs::CanonError> for AuditError {
    fn from(e: crate::jcs::CanonError) -> Self {
        AuditError::new(ErrorKind::InvalidEvent, format!("cannot canonicalize: {e}")).with_source(e)
    }
}

impl From<crate::jcs::ParseError> for AuditError {
    fn from(e: crate::jcs::ParseError) -> Self {
        AuditError::new(ErrorKind::Parse, e.to_string()).with_source(e)
    }
}

impl From<crate::merkle::ProofError> for AuditError {
    fn from(e: crate::merkle::ProofError) -> Self {
        AuditError::new(ErrorKind::Proof, e.to_string()).with_source(e)
    }
}

impl From<crate::redact::RedactError> for AuditError {
    fn from(e: crate::redact::RedactError) -> Self {
        AuditError::new(ErrorKind::Config, e.to_string()).with_source(e)
    }
}

/// Result alias of the core.
pub type Result<T, E = AuditError> = std::result::Result<T, E>;
