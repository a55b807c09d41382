//! Kafka (feature `kafka`): the exporter (an idempotent producer, `acks=all`,
//! key = stream id) and the collector's source (a consumer group that
//! commits offsets only once the collector has acknowledged the records).
//!
//! All records go to one topic (default `agent-audit`). The message key is
//! the stream id, so a stream stays in one partition and in order; the
//! tenant travels in a header (`agent-audit-tenant`) beside the idempotency
//! key `<stream_id>:<seq>` (`agent-audit-msg-id`), the stream id and the
//! seq. One topic rather than one per tenant: the collector files records
//! by the tenant written in them anyway, the topic count does not grow
//! with tenants, and a consumer needs no pattern subscription. The topic
//! is created when missing (`partitions`, `replication_factor`); create it
//! yourself for production (replication 3, `min.insync.replicas=2`).
//!
//! The producer is idempotent (`enable.idempotence=true`, `acks=all`):
//! librdkafka's own retries neither duplicate nor reorder a record. A batch
//! that failed is sent again by a new producer (new producer id), so a
//! record can still arrive twice; the collector drops it by (stream, seq).
//!
//! Kafka acknowledges by offset, not record by record: the source commits,
//! per partition, the offset after the longest prefix of records the
//! collector acknowledged. A record the collector holds (waiting for a
//! checkpoint) keeps its partition's offset below it; a restarted
//! collector is delivered everything from there again and drops what it
//! already has.
//!
//! librdkafka (built from source by `rdkafka`, linked statically) does the
//! protocol; the clients used are its synchronous ones, polled by the
//! caller.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::collect::{Delivery, Source};
use crate::error::{Error, Result};
use crate::exporter::{ExportFailure, Exporter, Outgoing};

/// Header with the idempotency key `<stream_id>:<seq>`.
pub const MSG_ID_HEADER: &str = "agent-audit-msg-id";
/// Header with the record's stream id (a hint for records that do not parse).
pub const STREAM_HEADER: &str = "agent-audit-stream";
/// Header with the record's seq (same use).
pub const SEQ_HEADER: &str = "agent-audit-seq";
/// Header with the tenant token (routing and filtering by consumers).
pub const TENANT_HEADER: &str = "agent-audit-tenant";

/// Where and how to talk to Kafka.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers, `HOST:PORT[,HOST:PORT…]`.
    pub brokers: String,
    /// The topic every record goes to.
    pub topic: String,
    /// Partitions of the topic when it is created.
    pub partitions: i32,
    /// Replication factor of the topic when it is created.
    pub replication_factor: i32,
    /// How long a batch may take to be acknowledged (librdkafka's
    /// `message.timeout.ms`), and how long an API answer is waited for.
    pub timeout: Duration,
    /// Exporter name (the cursor file's name).
    pub name: String,
    /// More librdkafka properties (TLS, SASL, …), applied last.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Defaults for a list of bootstrap servers.
    pub fn new(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic: "agent-audit".into(),
            partitions: 6,
            replication_factor: 1,
            timeout: Duration::from_secs(10),
            name: "kafka".into(),
            properties: Vec::new(),
        }
    }

    /// Defaults for a URL `kafka://HOST:PORT[,HOST:PORT…]`.
    pub fn from_url(url: &str) -> Result<KafkaConfig> {
        let brokers = url
            .strip_prefix("kafka://")
            .map(|b| b.trim_end_matches('/'))
            .filter(|b| !b.is_empty() && !b.contains('/'))
            .ok_or_else(|| {
                Error::new(format!("not a kafka://HOST:PORT[,HOST:PORT…] URL: {url}"))
            })?;
        Ok(KafkaConfig::new(brokers))
    }

    fn client_config(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        let timeout_ms = self.timeout.as_millis().clamp(100, i32::MAX as u128);
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("agent-audit-{role}"))
            .set("socket.timeout.ms", timeout_ms.to_string())
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "1000")
            .set("log_level", "3");
        c
    }

    fn apply_properties(&self, c: &mut ClientConfig) {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn kafka_err(what: impl Into<String>, e: KafkaError) -> Error {
    Error::with_source(what, e)
}

/// Creates the topic when it does not exist.
struct Topics {
    admin: AdminClient<DefaultClientContext>,
    rt: tokio::runtime::Runtime,
}

impl Topics {
    fn new(cfg: &KafkaConfig, role: &str) -> Result<Topics> {
        let mut c = cfg.client_config(role);
        cfg.apply_properties(&mut c);
        let admin = c
            .create()
            .map_err(|e| kafka_err("cannot create the Kafka admin client", e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::io("cannot start the Kafka admin runtime", e))?;
        Ok(Topics { admin, rt })
    }

    fn ensure(&self, cfg: &KafkaConfig) -> Result<()> {
        let topic = NewTopic::new(
            &cfg.topic,
            cfg.partitions,
            TopicReplication::Fixed(cfg.replication_factor),
        );
        let opts = AdminOptions::new()
            .request_timeout(Some(cfg.timeout))
            .operation_timeout(Some(cfg.timeout));
        let create = self.admin.create_topics([&topic], &opts);
        // The timer needs the runtime: made inside it.
        let created = self.rt.block_on(async {
            tokio::time::timeout(cfg.timeout + Duration::from_secs(1), create).await
        });
        let results = match created {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(kafka_err("cannot create the Kafka topic", e)),
            Err(_) => {
                return Err(Error::new(format!(
                    "timed out creating the Kafka topic {}",
                    cfg.topic
                )));
            }
        };
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(Error::new(format!(
                        "cannot create the Kafka topic {t}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// One delivery report: (batch, index in the batch), and the error if the
/// record was not delivered.
type Report = ((usize, usize), Option<KafkaError>);

/// Collects the producer's delivery reports.
struct DeliveryReports {
    reports: Mutex<Vec<Report>>,
}

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<(usize, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Box<(usize, usize)>) {
        let error = match result {
            Ok(_) => None,
            Err((e, _)) => Some(e.clone()),
        };
        lock(&self.reports).push((*opaque, error));
    }
}

/// Publishes records to Kafka with an idempotent producer.
pub struct KafkaExporter {
    cfg: KafkaConfig,
    producer: Option<BaseProducer<DeliveryReports>>,
    topics: Topics,
    topic_ready: bool,
    batch: usize,
}

impl std::fmt::Debug for KafkaExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaExporter")
            .field("brokers", &self.cfg.brokers)
            .field("topic", &self.cfg.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaExporter {
    /// An exporter for `cfg`; connects in the background.
    pub fn new(cfg: KafkaConfig) -> Result<KafkaExporter> {
        let topics = Topics::new(&cfg, "ship-admin")?;
        let producer = Some(Self::producer(&cfg)?);
        Ok(KafkaExporter {
            cfg,
            producer,
            topics,
            topic_ready: false,
            batch: 0,
        })
    }

    fn producer(cfg: &KafkaConfig) -> Result<BaseProducer<DeliveryReports>> {
        let mut c = cfg.client_config("ship");
        let timeout_ms = cfg.timeout.as_millis().clamp(100, i32::MAX as u128);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", timeout_ms.to_string())
            .set("linger.ms", "5");
        cfg.apply_properties(&mut c);
        c.create_with_context(DeliveryReports {
            reports: Mutex::new(Vec::new()),
        })
        .map_err(|e| kafka_err("cannot create the Kafka producer", e))
    }

    fn send_all(&mut self, records: &[Outgoing]) -> std::result::Result<(), (usize, Error, bool)> {
        let cfg = &self.cfg;
        let producer = match &self.producer {
            Some(p) => p,
            None => {
                let p = Self::producer(cfg).map_err(|e| (0, e, false))?;
                self.producer.insert(p)
            }
        };
        self.batch = self.batch.wrapping_add(1);
        let batch = self.batch;
        // Reports of an earlier, timed-out batch are of no use now.
        lock(&producer.context().reports).clear();
        // librdkafka fails what it could not deliver after
        // message.timeout.ms: wait a little longer than that.
        let deadline = Instant::now() + cfg.timeout + Duration::from_secs(2);
        let mut results: Vec<Option<Option<KafkaError>>> = vec![None; records.len()];
        let take_reports = |results: &mut Vec<Option<Option<KafkaError>>>| {
            for ((b, i), e) in lock(&producer.context().reports).drain(..) {
                if b == batch
                    && let Some(slot) = results.get_mut(i)
                {
                    *slot = Some(e);
                }
            }
        };
        let mut sent = 0usize;
        let mut send_error = None;
        'records: for (i, r) in records.iter().enumerate() {
            let seq = r.seq.to_string();
            let headers = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: MSG_ID_HEADER,
                    value: Some(r.msg_id.as_bytes()),
                })
                .insert(Header {
                    key: STREAM_HEADER,
                    value: Some(r.stream_id.as_bytes()),
                })
                .insert(Header {
                    key: SEQ_HEADER,
                    value: Some(seq.as_bytes()),
                })
                .insert(Header {
                    key: TENANT_HEADER,
                    value: Some(r.tenant.as_bytes()),
                });
            let mut record = BaseRecord::with_opaque_to(&cfg.topic, Box::new((batch, i)))
                .key(r.stream_id.as_bytes())
                .payload(r.line.as_slice())
                .headers(headers);
            loop {
                match producer.send(record) {
                    Ok(()) => {
                        sent += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < deadline =>
                    {
                        record = back;
                        producer.poll(Duration::from_millis(20));
                        take_reports(&mut results);
                    }
                    Err((e, _)) => {
                        send_error = Some(kafka_err("cannot queue a record for Kafka", e));
                        break 'records;
                    }
                }
            }
        }
        loop {
            take_reports(&mut results);
            if results[..sent].iter().all(Option::is_some) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            producer.poll((deadline - now).min(Duration::from_millis(50)));
        }
        let delivered = results[..sent]
            .iter()
            .take_while(|r| matches!(r, Some(None)))
            .count();
        if delivered == records.len() {
            return Ok(());
        }
        let failed = results[..sent].iter().find_map(|r| match r {
            Some(Some(e)) => Some(e.clone()),
            _ => None,
        });
        let unknown_topic = failed.as_ref().is_some_and(|e| {
            matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
            )
        });
        let error = match (failed, send_error) {
            (Some(e), _) => kafka_err("Kafka did not acknowledge a record", e),
            (None, Some(e)) => e,
            (None, None) => Error::new("timed out waiting for Kafka's acknowledgement"),
        };
        Err((delivered, error, unknown_topic))
    }
}

impl Exporter for KafkaExporter {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn export(&mut self, records: &[Outgoing]) -> std::result::Result<(), ExportFailure> {
        if records.is_empty() {
            return Ok(());
        }
        if !self.topic_ready {
            self.topics
                .ensure(&self.cfg)
                .map_err(|error| ExportFailure {
                    delivered: 0,
                    error,
                })?;
            self.topic_ready = true;
        }
        match self.send_all(records) {
            Ok(()) => Ok(()),
            Err((delivered, error, unknown_topic)) => {
                if unknown_topic {
                    self.topic_ready = false;
                }
                // The retry goes through a new producer (a new producer id,
                // sequence numbers from 0): after records timed out or were
                // refused, the old one's sequence state may have a gap the
                // broker never accepts (a restarted broker answers
                // OutOfOrderSequenceNumber forever). Dropping it purges
                // what it still holds.
                self.producer = None;
                Err(ExportFailure { delivered, error })
            }
        }
    }
}

/// One delivered offset the collector has not settled yet.
#[derive(Debug)]
struct Slot {
    acked: bool,
    released: bool,
    /// A copy of a record at a lower offset of this partition.
    dup: bool,
    key: Option<String>,
}

impl Slot {
    /// Settled: acknowledged, or dropped as a duplicate of an earlier copy
    /// (which the collector acknowledges or that blocks the offset itself).
    fn done(&self) -> bool {
        self.acked || (self.released && self.dup)
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Every delivered offset below this is settled.
    done_to: i64,
    slots: BTreeMap<i64, Slot>,
    /// Idempotency key → offset of its first copy among `slots`.
    first: HashMap<String, i64>,
    /// The last offset Kafka confirmed committing.
    confirmed: i64,
    /// The last offset asked to be committed, and when.
    requested: Option<(i64, Instant)>,
}

impl PartitionState {
    fn advance(&mut self) {
        while let Some(entry) = self.slots.first_entry() {
            if !entry.get().done() {
                break;
            }
            let (offset, slot) = entry.remove_entry();
            if let Some(k) = slot.key
                && self.first.get(&k) == Some(&offset)
            {
                self.first.remove(&k);
            }
            self.done_to = offset + 1;
        }
    }
}

/// Offsets delivered and settled, per partition of the topic.
#[derive(Debug, Default)]
struct Tracker {
    parts: HashMap<i32, PartitionState>,
    assigned: HashSet<i32>,
}

impl Tracker {
    /// Notes a delivery; false when the offset was settled before (a
    /// redelivery after a rebalance): its ack then changes nothing.
    fn deliver(&mut self, partition: i32, offset: i64, key: Option<String>) -> bool {
        let p = self
            .parts
            .entry(partition)
            .or_insert_with(|| PartitionState {
                done_to: offset,
                confirmed: offset,
                ..Default::default()
            });
        if offset < p.done_to {
            return false;
        }
        if p.slots.contains_key(&offset) {
            return true;
        }
        let dup = match &key {
            Some(k) => match p.first.get(k) {
                Some(&o) => o < offset,
                None => {
                    p.first.insert(k.clone(), offset);
                    false
                }
            },
            None => false,
        };
        p.slots.insert(
            offset,
            Slot {
                acked: false,
                released: false,
                dup,
                key,
            },
        );
        true
    }

    fn settle(&mut self, partition: i32, offset: i64, acked: bool) {
        if let Some(p) = self.parts.get_mut(&partition)
            && let Some(s) = p.slots.get_mut(&offset)
        {
            if acked {
                s.acked = true;
            } else {
                s.released = true;
            }
            p.advance();
        }
    }

    /// The offsets to commit now: assigned partitions whose settled prefix
    /// grew past what was committed (asked again after a while).
    fn due_commits(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&part, p) in &mut self.parts {
            if !self.assigned.contains(&part) || p.done_to <= p.confirmed {
                continue;
            }
            let ask = match p.requested {
                Some((o, at)) => o != p.done_to || at.elapsed() > Duration::from_secs(5),
                None => true,
            };
            if ask {
                p.requested = Some((p.done_to, Instant::now()));
                out.push((part, p.done_to));
            }
        }
        out.sort_unstable();
        out
    }

    fn uncommitted(&self) -> bool {
        self.parts
            .iter()
            .any(|(part, p)| self.assigned.contains(part) && p.done_to > p.confirmed)
    }
}

/// The consumer's callbacks: assignments and commit results.
struct SourceContext {
    topic: String,
    tracker: Arc<Mutex<Tracker>>,
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut t = lock(&self.tracker);
        match rebalance {
            Rebalance::Assign(tpl) => {
                t.assigned = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements_for_topic(&self.topic) {
                    t.assigned.remove(&e.partition());
                }
            }
            Rebalance::Error(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let mut t = lock(&self.tracker);
        for e in offsets.elements_for_topic(&self.topic) {
            let Some(p) = t.parts.get_mut(&e.partition()) else {
                continue;
            };
            match (&result, e.error(), e.offset()) {
                (Ok(()), Ok(()), Offset::Offset(o)) => p.confirmed = p.confirmed.max(o),
                // Asked again at the next acknowledgement.
                _ => p.requested = None,
            }
        }
    }
}

/// How the collector acknowledges one Kafka record: the source commits a
/// partition's offset past it once it and every record before it are
/// settled. Dropped without [`Source::ack`], the record is not settled
/// (unless it is a copy of an earlier record of its partition, which the
/// collector drops in favour of that one).
pub struct KafkaAck {
    partition: i32,
    offset: i64,
    tracker: Option<Arc<Mutex<Tracker>>>,
}

impl std::fmt::Debug for KafkaAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAck")
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish()
    }
}

impl KafkaAck {
    fn settle(&mut self, acked: bool) {
        if let Some(t) = self.tracker.take() {
            lock(&t).settle(self.partition, self.offset, acked);
        }
    }
}

impl Drop for KafkaAck {
    fn drop(&mut self) {
        self.settle(false);
    }
}

/// The collector's source: a Kafka consumer group with manual offset
/// commits, so a restarted collector resumes where it acknowledged. Run
/// one collector per group and output directory.
pub struct KafkaSource {
    cfg: KafkaConfig,
    group: String,
    topics: Topics,
    tracker: Arc<Mutex<Tracker>>,
    consumer: Option<BaseConsumer<SourceContext>>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("brokers", &self.cfg.brokers)
            .field("topic", &self.cfg.topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// A source reading `cfg`'s topic as consumer group `group`; connects
    /// in the background.
    pub fn new(cfg: KafkaConfig, group: &str) -> Result<KafkaSource> {
        let topics = Topics::new(&cfg, "collect-admin")?;
        Ok(KafkaSource {
            cfg,
            group: group.to_string(),
            topics,
            tracker: Arc::new(Mutex::new(Tracker::default())),
            consumer: None,
        })
    }

    fn consumer(&mut self) -> Result<&BaseConsumer<SourceContext>> {
        if self.consumer.is_none() {
            self.topics.ensure(&self.cfg)?;
            let mut c = self.cfg.client_config("collect");
            c.set("group.id", &self.group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "false")
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000");
            self.cfg.apply_properties(&mut c);
            let consumer: BaseConsumer<SourceContext> = c
                .create_with_context(SourceContext {
                    topic: self.cfg.topic.clone(),
                    tracker: self.tracker.clone(),
                })
                .map_err(|e| kafka_err("cannot create the Kafka consumer", e))?;
            consumer
                .subscribe(&[&self.cfg.topic])
                .map_err(|e| kafka_err("cannot subscribe to the Kafka topic", e))?;
            self.consumer = Some(consumer);
        }
        self.consumer
            .as_ref()
            .ok_or_else(|| Error::new("no Kafka consumer"))
    }

    /// Asks Kafka to commit what is settled (asynchronously; the result
    /// arrives with a later poll).
    fn commit_settled(&self) -> Result<()> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let offsets = lock(&self.tracker).due_commits();
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (part, offset) in offsets {
            tpl.add_partition_offset(&self.cfg.topic, part, Offset::Offset(offset))
                .map_err(|e| kafka_err("bad offset", e))?;
        }
        consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| kafka_err("cannot commit Kafka offsets", e))
    }
}

fn header(m: &impl Message, name: &str) -> Option<String> {
    let h = m.headers()?;
    (0..h.count())
        .filter_map(|i| h.try_get(i))
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

impl Source for KafkaSource {
    type Ack = KafkaAck;

    fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery<KafkaAck>>> {
        self.consumer()?;
        self.commit_settled()?;
        let consumer = self
            .consumer
            .as_ref()
            .ok_or_else(|| Error::new("no Kafka consumer"))?;
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            let timeout = if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    let msg_id = header(&m, MSG_ID_HEADER);
                    let live = lock(&self.tracker).deliver(m.partition(), m.offset(), msg_id);
                    let stream_hint = header(&m, STREAM_HEADER).or_else(|| {
                        m.key()
                            .and_then(|k| std::str::from_utf8(k).ok())
                            .map(str::to_string)
                    });
                    out.push(Delivery {
                        payload: m.payload().unwrap_or_default().to_vec(),
                        stream_hint,
                        seq_hint: header(&m, SEQ_HEADER).and_then(|s| s.parse().ok()),
                        ack: KafkaAck {
                            partition: m.partition(),
                            offset: m.offset(),
                            tracker: live.then(|| self.tracker.clone()),
                        },
                    });
                }
                Some(Err(e)) if out.is_empty() => {
                    return Err(kafka_err("cannot fetch from Kafka", e));
                }
                Some(Err(_)) => break,
            }
        }
        Ok(out)
    }

    fn ack(&mut self, acks: Vec<KafkaAck>) -> Result<()> {
        for mut a in acks {
            a.settle(true);
        }
        self.commit_settled()
    }
}

impl Drop for KafkaSource {
    /// Commits what is settled, waiting up to the configured timeout.
    fn drop(&mut self) {
        if self.commit_settled().is_err() {
            return;
        }
        let Some(consumer) = &self.consumer else {
            return;
        };
        let deadline = Instant::now() + self.cfg.timeout;
        // Polling serves the commit callback; a record it returns is not
        // acknowledged, so it is delivered again to the next collector.
        while lock(&self.tracker).uncommitted() && Instant::now() < deadline {
            let _ = consumer.poll(Duration::from_millis(50));
            let _ = self.commit_settled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_url() {
        let c = KafkaConfig::from_url("kafka://a:9092,b:9093/").unwrap();
        assert_eq!(c.brokers, "a:9092,b:9093");
        assert_eq!(c.topic, "agent-audit");
        assert!(KafkaConfig::from_url("kafka://").is_err());
        assert!(KafkaConfig::from_url("nats://a:4222").is_err());
        assert!(KafkaConfig::from_url("kafka://a:1/topic").is_err());
    }

    fn assigned(parts: &[i32]) -> Tracker {
        Tracker {
            assigned: parts.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn commits_the_settled_prefix_only() {
        let mut t = assigned(&[0, 1]);
        for o in 10..15 {
            assert!(t.deliver(0, o, Some(format!("s:{o}"))));
        }
        assert!(t.deliver(1, 0, Some("x:0".into())));
        assert!(t.due_commits().is_empty());
        t.settle(0, 10, true);
        t.settle(0, 12, true);
        assert_eq!(t.due_commits(), vec![(0, 11)]);
        // Asked already: not again right away.
        assert!(t.due_commits().is_empty());
        t.settle(0, 11, true);
        t.settle(1, 0, true);
        assert_eq!(t.due_commits(), vec![(0, 13), (1, 1)]);
        // Dropped without an ack (the collector stopped holding it): the
        // offset stays below it.
        t.settle(0, 13, false);
        t.settle(0, 14, true);
        assert!(t.due_commits().is_empty());
        assert_eq!(t.parts[&0].done_to, 13);
    }

    #[test]
    fn a_dropped_copy_of_an_earlier_record_does_not_block() {
        let mut t = assigned(&[0]);
        assert!(t.deliver(0, 0, Some("s:0".into())));
        assert!(t.deliver(0, 1, Some("s:1".into())));
        // s:0 again (a batch the shipper sent twice), dropped as a copy of
        // the held one.
        assert!(t.deliver(0, 2, Some("s:0".into())));
        assert!(t.deliver(0, 3, Some("s:2".into())));
        t.settle(0, 2, false);
        t.settle(0, 3, true);
        t.settle(0, 1, true);
        assert!(t.due_commits().is_empty(), "held s:0 must block");
        t.settle(0, 0, true);
        assert_eq!(t.due_commits(), vec![(0, 4)]);
        assert!(t.parts[&0].first.is_empty());
    }

    #[test]
    fn redelivery_after_a_rebalance() {
        let mut t = assigned(&[0]);
        assert!(t.deliver(0, 5, Some("s:0".into())));
        assert!(t.deliver(0, 6, Some("s:1".into())));
        t.settle(0, 5, true);
        // Redelivered from the committed offset: the settled one is
        // ignored, the held one is the same slot.
        assert!(!t.deliver(0, 5, Some("s:0".into())));
        assert!(t.deliver(0, 6, Some("s:1".into())));
        t.settle(0, 6, false);
        assert_eq!(t.due_commits(), vec![(0, 6)]);
        t.settle(0, 6, true);
        assert_eq!(t.due_commits(), vec![(0, 7)]);
        // Not assigned: nothing is committed for it.
        assert!(t.deliver(3, 0, None));
        t.settle(3, 0, true);
        assert!(t.due_commits().is_empty());
    }
}
