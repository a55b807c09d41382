//! `agent-audit ship` and `agent-audit collect`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use agent_audit::{AuditError, ErrorKind};
use agent_audit_ship::tail::TailLimits;
use agent_audit_ship::{
    CollectOptions, NatsConfig, NatsExporter, NatsSource, OtlpConfig, OtlpExporter, ShipOptions,
};
use clap::Args;

/// Arguments of `ship`.
#[derive(Args)]
pub struct ShipArgs {
    /// Log directory to follow.
    log: PathBuf,
    /// Where to: nats://HOST:PORT (NATS JetStream),
    /// kafka://HOST:PORT[,HOST:PORT…] (Kafka, feature `kafka`), or
    /// http://HOST:PORT or https://HOST:PORT (OTLP/HTTP: records as log
    /// records to /v1/logs, the trace structure as GenAI spans to
    /// /v1/traces).
    #[arg(long)]
    to: String,
    /// Exporter name; the cursor is LOG/.ship-cursor.NAME.json (default:
    /// nats, kafka for a kafka:// URL, or otlp for an http(s) URL).
    #[arg(long)]
    name: Option<String>,
    /// Exit once there was nothing to ship for SECS (default: run until
    /// SIGTERM or SIGINT).
    #[arg(long, value_name = "SECS")]
    until_idle: Option<f64>,
    /// Records in flight (sent, not yet acknowledged) at most.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    otlp: OtlpArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// OTLP/HTTP settings of `ship`.
#[derive(Args)]
struct OtlpArgs {
    /// The resource's service.name in OTLP.
    #[arg(long, default_value = "agent-audit")]
    service_name: String,
    /// Extra OTLP request header NAME=VALUE (e.g. authorization); repeat
    /// for several.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE")]
    otlp_headers: Vec<String>,
    /// Send log records only, no spans.
    #[arg(long)]
    no_spans: bool,
}

/// Arguments of `collect`.
#[derive(Args)]
pub struct CollectArgs {
    /// Where from: nats://HOST:PORT (NATS JetStream), or
    /// kafka://HOST:PORT[,HOST:PORT…] (Kafka, feature `kafka`).
    #[arg(long)]
    from: String,
    /// Central log directory.
    #[arg(long)]
    to: PathBuf,
    /// Trusted writer public key (PEM); repeat for several. Streams signed
    /// by any other key are quarantined.
    #[arg(long = "trust", value_name = "PUB.pem", required = true)]
    trust: Vec<PathBuf>,
    /// The collector's own signing key (PKCS#8 PEM): co-sign every
    /// checkpoint it accepts into the stream's witness.jsonl, for
    /// `agent-audit verify --witness`.
    #[arg(long, value_name = "KEY.pem")]
    witness_key: Option<PathBuf>,
    /// Durable consumer name (NATS), or consumer group (Kafka): a
    /// restarted collector resumes from it.
    #[arg(long, default_value = "agent-audit-collector")]
    durable: String,
    /// Exit once nothing arrived for SECS (default: run until SIGTERM or
    /// SIGINT).
    #[arg(long, value_name = "SECS")]
    until_idle: Option<f64>,
    /// Records delivered and not yet acknowledged, at most.
    #[arg(long, default_value_t = 100_000)]
    max_ack_pending: i64,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

/// Kafka settings shared by both (kafka://HOST:PORT[,HOST:PORT…]; needs
/// the `kafka` feature).
#[derive(Args)]
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
struct KafkaArgs {
    /// Kafka topic (one for all tenants; the tenant is a header).
    #[arg(long, default_value = "agent-audit")]
    topic: String,
    /// Partitions of the Kafka topic, when it is created.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Replication factor of the Kafka topic, when it is created.
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// Extra librdkafka property KEY=VALUE (TLS, SASL, …); repeat for
    /// several.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
}

fn is_kafka_url(url: &str) -> bool {
    url.starts_with("kafka://")
}

#[cfg(feature = "kafka")]
fn kafka_config(url: &str, args: &KafkaArgs) -> Result<agent_audit_ship::KafkaConfig, AuditError> {
    let mut cfg = agent_audit_ship::KafkaConfig::from_url(url).map_err(|e| usage(e.to_string()))?;
    cfg.topic = args.topic.clone();
    cfg.partitions = args.partitions;
    cfg.replication_factor = args.replication_factor;
    for p in &args.kafka_properties {
        let Some((k, v)) = p.split_once('=') else {
            return Err(usage(format!(
                "--kafka-property: expected KEY=VALUE, got {p:?}"
            )));
        };
        cfg.properties
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(cfg)
}

#[cfg(not(feature = "kafka"))]
fn kafka_unavailable(url: &str) -> AuditError {
    usage(format!(
        "{url}: this agent-audit was built without Kafka support (cargo feature `kafka`)"
    ))
}

/// JetStream settings shared by both.
#[derive(Args)]
struct NatsArgs {
    /// JetStream stream name.
    #[arg(long, default_value = "AGENT_AUDIT")]
    stream: String,
    /// Subject prefix: records go to PREFIX.<tenant>.records.
    #[arg(long, default_value = "agent-audit")]
    subject_prefix: String,
    /// JetStream duplicate window in seconds (when creating the stream).
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    duplicate_window: f64,
}

fn usage(msg: impl Into<String>) -> AuditError {
    AuditError::new(ErrorKind::Config, msg)
}

fn secs(s: f64, what: &str) -> Result<Duration, AuditError> {
    Duration::try_from_secs_f64(s).map_err(|_| usage(format!("{what}: not a duration: {s}")))
}

fn nats_config(url: &str, args: &NatsArgs) -> Result<NatsConfig, AuditError> {
    if !url.starts_with("nats://") {
        return Err(usage(format!(
            "unsupported URL {url}: expected nats://HOST:PORT, kafka://HOST:PORT (or, for ship, http(s)://HOST:PORT for OTLP)"
        )));
    }
    let mut cfg = NatsConfig::new(url);
    cfg.stream = args.stream.clone();
    cfg.subject_prefix = args.subject_prefix.clone();
    cfg.duplicate_window = secs(args.duplicate_window, "--duplicate-window")?;
    Ok(cfg)
}

fn is_otlp_url(url: &str) -> bool {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    matches!(scheme.as_deref(), Some("http" | "https"))
}

fn otlp_config(url: &str, args: &OtlpArgs) -> Result<OtlpConfig, AuditError> {
    let mut cfg = OtlpConfig::new(url);
    cfg.service_name = args.service_name.clone();
    cfg.spans = !args.no_spans;
    for h in &args.otlp_headers {
        let Some((k, v)) = h.split_once('=') else {
            return Err(usage(format!(
                "--otlp-header: expected NAME=VALUE, got {h:?}"
            )));
        };
        cfg.headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(cfg)
}

fn stop_on_signals() -> Result<Arc<AtomicBool>, AuditError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| AuditError::io("cannot install a signal handler", e))?;
    }
    Ok(stop)
}

fn ship_err(e: agent_audit_ship::Error) -> AuditError {
    AuditError::new(ErrorKind::Io, e.to_string())
}

fn print_json(v: &impl serde::Serialize) {
    if let Ok(s) = serde_json::to_string(v) {
        println!("{s}");
    }
}

pub fn ship(args: ShipArgs) -> Result<u8, AuditError> {
    let opts = ShipOptions {
        limits: TailLimits {
            max_records: args.batch.max(1),
            ..TailLimits::default()
        },
        until_idle: args
            .until_idle
            .map(|s| secs(s, "--until-idle"))
            .transpose()?,
        ..ShipOptions::default()
    };
    if is_otlp_url(&args.to) {
        let mut cfg = otlp_config(&args.to, &args.otlp)?;
        cfg.name = args.name.clone().unwrap_or_else(|| "otlp".into());
        let mut exporter = OtlpExporter::new(cfg).map_err(ship_err)?;
        let stop = stop_on_signals()?;
        let stats =
            agent_audit_ship::ship(&args.log, &mut exporter, &opts, &stop).map_err(ship_err)?;
        let r = exporter.rejections();
        if r.log_records > 0 || r.spans > 0 {
            eprintln!(
                "agent-audit ship: the OTLP receiver rejected {} log records and {} spans for good{}",
                r.log_records,
                r.spans,
                r.last_message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            );
        }
        print_json(&stats);
        return Ok(0);
    }
    if is_kafka_url(&args.to) {
        #[cfg(feature = "kafka")]
        {
            let mut cfg = kafka_config(&args.to, &args.kafka)?;
            cfg.name = args.name.clone().unwrap_or_else(|| "kafka".into());
            let stop = stop_on_signals()?;
            let mut exporter = agent_audit_ship::KafkaExporter::new(cfg).map_err(ship_err)?;
            let stats =
                agent_audit_ship::ship(&args.log, &mut exporter, &opts, &stop).map_err(ship_err)?;
            print_json(&stats);
            return Ok(0);
        }
        #[cfg(not(feature = "kafka"))]
        return Err(kafka_unavailable(&args.to));
    }
    let mut cfg = nats_config(&args.to, &args.nats)?;
    cfg.name = args.name.clone().unwrap_or_else(|| "nats".into());
    let stop = stop_on_signals()?;
    let mut exporter = NatsExporter::new(cfg).map_err(ship_err)?;
    let stats = agent_audit_ship::ship(&args.log, &mut exporter, &opts, &stop).map_err(ship_err)?;
    print_json(&stats);
    Ok(0)
}

pub fn collect(args: CollectArgs) -> Result<u8, AuditError> {
    #[cfg(not(feature = "kafka"))]
    if is_kafka_url(&args.from) {
        return Err(kafka_unavailable(&args.from));
    }
    let mut opts = CollectOptions::new(&args.to);
    opts.trusted_keys = super::load_keys(&args.trust)?;
    if let Some(k) = &args.witness_key {
        opts.witness_key = Some(Arc::new(agent_audit::keys::KeyPair::load(k)?));
    }
    opts.until_idle = args
        .until_idle
        .map(|s| secs(s, "--until-idle"))
        .transpose()?;
    let stop = stop_on_signals()?;
    #[cfg(feature = "kafka")]
    if is_kafka_url(&args.from) {
        let cfg = kafka_config(&args.from, &args.kafka)?;
        let mut source =
            agent_audit_ship::KafkaSource::new(cfg, &args.durable).map_err(ship_err)?;
        let stats = agent_audit_ship::collect(&mut source, &opts, &stop).map_err(ship_err)?;
        drop(source);
        print_json(&stats);
        return Ok(u8::from(stats.quarantined_streams > 0));
    }
    let cfg = nats_config(&args.from, &args.nats)?;
    let mut source = NatsSource::new(cfg, &args.durable, args.max_ack_pending).map_err(ship_err)?;
    let stats = agent_audit_ship::collect(&mut source, &opts, &stop).map_err(ship_err)?;
    print_json(&stats);
    Ok(u8::from(stats.quarantined_streams > 0))
}
