//! NATS JetStream: the exporter (publish with `Nats-Msg-Id`, wait for the
//! stream's ack) and the collector's source (a durable pull consumer with
//! explicit acks).
//!
//! Records are published to `<prefix>.<tenant>.records` (default prefix
//! `agent-audit`) in one JetStream stream (default `AGENT_AUDIT`) that
//! the exporter or the collector creates when it is missing, with a
//! duplicate window: within it JetStream itself drops a record sent
//! twice; after it, the collector does. The NATS client is async; each
//! side runs it on a private one-worker tokio runtime, so the caller stays
//! synchronous and the connection is kept alive in the background.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::{Acker, PublishMessage};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::collect::{Delivery, Source};
use crate::error::{Error, Result};
use crate::exporter::{ExportFailure, Exporter, Outgoing};

/// Header with the record's stream id (a hint for records that do not parse).
pub const STREAM_HEADER: &str = "Agent-Audit-Stream";
/// Header with the record's seq.
pub const SEQ_HEADER: &str = "Agent-Audit-Seq";

/// Where and how to talk to NATS.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Server URL, `nats://HOST:PORT`.
    pub url: String,
    /// JetStream stream name.
    pub stream: String,
    /// Subject prefix: records go to `<prefix>.<tenant>.records`.
    pub subject_prefix: String,
    /// JetStream's duplicate window, used when the stream is created.
    pub duplicate_window: Duration,
    /// How long to wait for a publish ack or an API answer.
    pub timeout: Duration,
    /// Exporter name (the cursor file's name).
    pub name: String,
}

impl NatsConfig {
    /// Defaults for a server URL.
    pub fn new(url: impl Into<String>) -> NatsConfig {
        NatsConfig {
            url: url.into(),
            stream: "AGENT_AUDIT".into(),
            subject_prefix: "agent-audit".into(),
            duplicate_window: Duration::from_secs(120),
            timeout: Duration::from_secs(5),
            name: "nats".into(),
        }
    }

    /// The subject a tenant's records are published to.
    pub fn subject(&self, tenant: &str) -> String {
        format!("{}.{tenant}.records", self.subject_prefix)
    }

    fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            name: self.stream.clone(),
            subjects: vec![format!("{}.*.records", self.subject_prefix)],
            duplicate_window: self.duplicate_window,
            storage: StorageType::File,
            ..Default::default()
        }
    }
}

struct Conn {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Conn {
    fn open(cfg: &NatsConfig, role: &str) -> Result<Conn> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agent-audit-nats")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the NATS runtime", e))?;
        // Connects in the background and reconnects forever: an absent
        // broker delays delivery, it does not stop the shipper.
        let opts = async_nats::ConnectOptions::new()
            .name(format!("agent-audit {role}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(cfg.timeout)
            .reconnect_delay_callback(|attempts| {
                let ms = 50u64.saturating_mul(1u64 << attempts.min(6));
                Duration::from_millis(ms.min(2000))
            });
        let client = rt
            .block_on(opts.connect(cfg.url.as_str()))
            .map_err(|e| Error::with_source(format!("cannot connect to {}", cfg.url), e))?;
        // The context spawns its ack task on the runtime.
        let js = {
            let _in_runtime = rt.enter();
            let mut js = jetstream::new(client.clone());
            js.set_timeout(cfg.timeout);
            js
        };
        Ok(Conn { rt, client, js })
    }
}

/// Publishes records to NATS JetStream.
pub struct NatsExporter {
    cfg: NatsConfig,
    conn: Conn,
    stream_ready: bool,
}

impl std::fmt::Debug for NatsExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsExporter")
            .field("url", &self.cfg.url)
            .field("stream", &self.cfg.stream)
            .finish_non_exhaustive()
    }
}

impl NatsExporter {
    /// An exporter for `cfg`; connects in the background.
    pub fn new(cfg: NatsConfig) -> Result<NatsExporter> {
        let conn = Conn::open(&cfg, "ship")?;
        Ok(NatsExporter {
            cfg,
            conn,
            stream_ready: false,
        })
    }
}

impl Exporter for NatsExporter {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn export(&mut self, records: &[Outgoing]) -> std::result::Result<(), ExportFailure> {
        let cfg = &self.cfg;
        let js = &self.conn.js;
        let need_stream = !self.stream_ready;
        let overall = cfg.timeout.saturating_mul(2) + Duration::from_millis(100);
        let work = async {
            if need_stream {
                js.get_or_create_stream(cfg.stream_config())
                    .await
                    .map_err(|e| {
                        (
                            0,
                            Error::with_source("cannot create the JetStream stream", e),
                        )
                    })?;
            }
            // Publish the whole window, then wait for the acks in order.
            let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(records.len());
            let mut publish_error = None;
            for r in records {
                let msg = PublishMessage::build()
                    .payload(Bytes::copy_from_slice(&r.line))
                    .message_id(&r.msg_id)
                    .header(STREAM_HEADER, r.stream_id.as_str())
                    .header(SEQ_HEADER, r.seq.to_string().as_str());
                match js.send_publish(cfg.subject(&r.tenant), msg).await {
                    Ok(ack) => acks.push(ack),
                    Err(e) => {
                        publish_error = Some(Error::with_source("publish failed", e));
                        break;
                    }
                }
            }
            let mut delivered = 0usize;
            for ack in acks {
                match ack.await {
                    Ok(_) => delivered += 1,
                    Err(e) => {
                        return Err((delivered, Error::with_source("no ack from JetStream", e)));
                    }
                }
            }
            match publish_error {
                Some(e) => Err((delivered, e)),
                None => Ok(()),
            }
        };
        let result = self.conn.rt.block_on(async {
            match tokio::time::timeout(overall, work).await {
                Ok(r) => r,
                Err(_) => Err((0, Error::new("timed out waiting for JetStream"))),
            }
        });
        match result {
            Ok(()) => {
                self.stream_ready = true;
                Ok(())
            }
            Err((delivered, error)) => {
                if delivered > 0 {
                    self.stream_ready = true;
                }
                Err(ExportFailure { delivered, error })
            }
        }
    }
}

/// The collector's source: a durable JetStream pull consumer, so a
/// restarted collector resumes where it acknowledged.
pub struct NatsSource {
    cfg: NatsConfig,
    durable: String,
    max_ack_pending: i64,
    conn: Conn,
    consumer: Option<PullConsumer>,
}

impl std::fmt::Debug for NatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSource")
            .field("url", &self.cfg.url)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl NatsSource {
    /// A source reading `cfg`'s stream through the durable consumer
    /// `durable`; connects in the background. `max_ack_pending` bounds the
    /// records delivered and not yet acknowledged (the collector holds
    /// records until a verified checkpoint covers them).
    pub fn new(cfg: NatsConfig, durable: &str, max_ack_pending: i64) -> Result<NatsSource> {
        let conn = Conn::open(&cfg, "collect")?;
        Ok(NatsSource {
            cfg,
            durable: durable.to_string(),
            max_ack_pending,
            conn,
            consumer: None,
        })
    }
}

impl Source for NatsSource {
    type Ack = Acker;

    fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<Acker>>> {
        let cfg = &self.cfg;
        let js = &self.conn.js;
        let durable = &self.durable;
        let max_ack_pending = self.max_ack_pending;
        let existing = self.consumer.clone();
        let overall = wait + cfg.timeout.saturating_mul(2);
        let work = async {
            let consumer = match existing {
                Some(c) => c,
                None => {
                    let stream = js
                        .get_or_create_stream(cfg.stream_config())
                        .await
                        .map_err(|e| Error::with_source("cannot open the JetStream stream", e))?;
                    stream
                        .get_or_create_consumer(
                            durable,
                            pull::Config {
                                durable_name: Some(durable.clone()),
                                ack_policy: AckPolicy::Explicit,
                                deliver_policy: DeliverPolicy::All,
                                ack_wait: Duration::from_secs(30),
                                max_ack_pending,
                                ..Default::default()
                            },
                        )
                        .await
                        .map_err(|e| Error::with_source("cannot create the durable consumer", e))?
                }
            };
            let mut batch = consumer
                .fetch()
                .max_messages(max)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| Error::with_source("cannot fetch from JetStream", e))?;
            let mut out = Vec::new();
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => {
                        let (msg, acker) = m.split();
                        let header = |name: &str| {
                            msg.headers
                                .as_ref()
                                .and_then(|h| h.get(name))
                                .map(|v| v.as_str().to_string())
                        };
                        out.push(Delivery {
                            stream_hint: header(STREAM_HEADER),
                            seq_hint: header(SEQ_HEADER).and_then(|s| s.parse().ok()),
                            payload: msg.payload.to_vec(),
                            ack: acker,
                        });
                    }
                    Err(e) if out.is_empty() => {
                        return Err(Error::with_source("fetch from JetStream failed", e));
                    }
                    Err(_) => break,
                }
            }
            Ok((consumer, out))
        };
        let result = self.conn.rt.block_on(async {
            match tokio::time::timeout(overall, work).await {
                Ok(r) => r,
                Err(_) => Err(Error::new("timed out fetching from JetStream")),
            }
        });
        let (consumer, out) = result?;
        self.consumer = Some(consumer);
        Ok(out)
    }

    fn ack(&mut self, acks: Vec<Acker>) -> Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        let client = &self.conn.client;
        let timeout = self.cfg.timeout;
        self.conn.rt.block_on(async {
            let mut failed = 0usize;
            for a in &acks {
                if a.ack().await.is_err() {
                    failed += 1;
                }
            }
            let flushed = tokio::time::timeout(timeout, client.flush()).await;
            if failed > 0 || !matches!(flushed, Ok(Ok(()))) {
                // Unacknowledged records are redelivered and dropped as
                // duplicates then.
                return Err(Error::new(format!(
                    "{failed} of {} acks not sent; they will be redelivered",
                    acks.len()
                )));
            }
            Ok(())
        })
    }
}
