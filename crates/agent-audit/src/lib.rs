//! agent-audit: tamper-evident audit trails for AI agents.
//!
//! Events are captured on the caller's thread ([`AuditLog::emit`]), then
//! redacted, hashed, chained, checkpointed, signed and written by a
//! background thread ([`writer`]). Anyone can check a log with
//! [`verify::verify_log`] and read a task back with [`trace::show_trace`].
//!
//! Module map: [`record`] (schema v1), [`jcs`] (RFC 8785), [`redact`],
//! [`payload`], [`encode`], [`chain`], [`merkle`] (RFC 6962), [`keys`],
//! [`writer`], [`reader`], [`verify`], [`trace`], [`proof`], [`ingest`],
//! [`policy`] (risk flags, blocking, scores).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod canon_ser;
pub mod chain;
pub mod encode;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod ingest;
pub mod jcs;
pub mod keys;
pub mod merkle;
pub mod options;
pub mod payload;
pub mod policy;
pub mod proof;
pub mod reader;
pub mod record;
pub mod redact;
mod syncer;
pub mod trace;
pub mod verify;
pub mod witness;
pub mod writer;

pub use error::{AuditError, ErrorKind, Result};
pub use ids::{SpanId, Timestamp, TraceId};
pub use record::{Body, CaptureMode, Event, Kind, PayloadPart, Principal, Risk};
pub use writer::{
    AuditLog, EventSource, FsyncPolicy, KeySource, LogConfig, Overflow, PolicySource,
    ShutdownReason, Stats,
};
