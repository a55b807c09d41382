//! Shipping agent-audit logs off the machine, and collecting them.
//!
//! The local log stays the write-ahead log. A [`tail::Tailer`] follows a
//! log directory like `tail -F` (every stream, across segment rotations
//! and new streams), reads whole lines only, and keeps a cursor per
//! exporter in the log directory ([`cursor`]). [`ship::ship`] hands the
//! lines, unmodified, to an [`exporter::Exporter`] in bounded batches,
//! waits for the receiver's acknowledgement, advances the cursor, and
//! retries with exponential back-off and jitter: at-least-once delivery,
//! with the idempotency key `<stream_id>:<seq>` on every record.
//! [`nats::NatsExporter`] is the first exporter (NATS JetStream);
//! [`otlp::OtlpExporter`] sends OTLP/HTTP (records as log records, the
//! trace structure as spans with the GenAI semantic conventions).
//! [`background::spawn_exporter`] runs the shipper inside the agent's
//! process, on a low-priority thread started next to the log writer.
//!
//! [`collect::collect`] is the other end: it consumes records from a
//! [`collect::Source`] ([`nats::NatsSource`], a durable JetStream
//! consumer), drops duplicates by (stream, seq), re-verifies every stream
//! incrementally with the core's verifier
//! ([`agent_audit::verify::StreamVerifier`]: hashes, chain, checkpoint
//! roots and signatures against trusted writer keys), writes records a
//! verified checkpoint covers into a central log partitioned by tenant
//! and retention class, and quarantines a broken stream with the
//! verifier's findings.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod background;
pub mod collect;
pub mod cursor;
pub mod error;
pub mod exporter;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod nats;
pub mod otlp;
pub mod record;
pub mod ship;
pub mod tail;

pub use background::{
    ExportTarget, ExporterConfig, ExporterHandle, ExporterStats, exporter_from_url, spawn_exporter,
};
pub use collect::{CollectOptions, CollectStats, Source, collect};
pub use error::{Error, Result};
pub use exporter::{ExportFailure, Exporter, Outgoing};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaConfig, KafkaExporter, KafkaSource};
pub use nats::{NatsConfig, NatsExporter, NatsSource};
pub use otlp::{OtlpConfig, OtlpExporter};
pub use ship::{ShipOptions, ShipStats, ship};
