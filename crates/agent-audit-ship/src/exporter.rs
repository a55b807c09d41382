//! The exporter interface: NATS JetStream is the first implementation;
//! OTLP and Kafka exporters plug in the same way.

use crate::error::Error;

/// One record on its way out: the line exactly as it is in the local log
/// (without its newline), so anything downstream can verify it byte for
/// byte, and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The stream the record belongs to.
    pub stream_id: String,
    /// The record's seq (its line index when the line does not parse).
    pub seq: u64,
    /// Tenant token (see [`crate::record::partition_token`]): routing,
    /// e.g. a subject or topic per tenant.
    pub tenant: String,
    /// The idempotency key receivers drop duplicates by: `<stream_id>:<seq>`.
    pub msg_id: String,
    /// The record line, unmodified, without the newline.
    pub line: Vec<u8>,
}

/// An export that did not complete.
#[derive(Debug)]
pub struct ExportFailure {
    /// How many records from the start of the batch the receiver did
    /// acknowledge (the cursor advances past them).
    pub delivered: usize,
    /// What went wrong.
    pub error: Error,
}

/// Delivers records to a receiver, at least once and in order.
pub trait Exporter {
    /// A short name; the cursor file is named after it, so two exporters
    /// of one log keep separate cursors.
    fn name(&self) -> &str;

    /// Delivers `records` in order and returns once the receiver has
    /// acknowledged every one. The records of one stream in a batch are
    /// in seq order. On failure, says how many leading records were
    /// acknowledged; the caller retries the rest (a receiver may so see
    /// a record twice, and drops it by its `msg_id`).
    fn export(&mut self, records: &[Outgoing]) -> std::result::Result<(), ExportFailure>;
}
