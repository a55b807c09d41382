//! The error type of shipping and collecting.

use std::fmt;

/// Something went wrong: a message and, when there is one, its cause.
#[derive(Debug)]
pub struct Error {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and its cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        Error {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An I/O error on a path.
    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Error {
        Error::with_source(format!("{what}: {e}"), e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            let s = s.to_string();
            if !self.message.contains(&s) {
                write!(f, ": {s}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<agent_audit::AuditError> for Error {
    fn from(e: agent_audit::AuditError) -> Error {
        Error::with_source(e.to_string(), e)
    }
}
