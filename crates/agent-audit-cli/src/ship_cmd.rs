//! `agent-audit ship` and `agent-audit collect`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use agent_audit::{AuditError, ErrorKind};
use agent_audit_ship::tail::TailLimits;
use agent_audit_ship::{CollectOptions, NatsConfig, NatsExporter, NatsSource, ShipOptions};
use clap::Args;

/// Arguments of `ship`.
#[derive(Args)]
pub struct ShipArgs {
    /// Log directory to follow.
    log: PathBuf,
    /// Where to: nats://HOST:PORT (NATS JetStream).
    #[arg(long)]
    to: String,
    /// Exporter name; the cursor is LOG/.ship-cursor.NAME.json.
    #[arg(long, default_value = "nats")]
    name: String,
    /// Exit once there was nothing to ship for SECS (default: run until
    /// SIGTERM or SIGINT).
    #[arg(long, value_name = "SECS")]
    until_idle: Option<f64>,
    /// Records in flight (sent, not yet acknowledged) at most.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    #[command(flatten)]
    nats: NatsArgs,
}

/// Arguments of `collect`.
#[derive(Args)]
pub struct CollectArgs {
    /// Where from: nats://HOST:PORT (NATS JetStream).
    #[arg(long)]
    from: String,
    /// Central log directory.
    #[arg(long)]
    to: PathBuf,
    /// Trusted writer public key (PEM); repeat for several. Streams signed
    /// by any other key are quarantined.
    #[arg(long = "trust", value_name = "PUB.pem", required = true)]
    trust: Vec<PathBuf>,
    /// Durable consumer name: a restarted collector resumes from it.
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
            "unsupported URL {url}: this version ships to nats://HOST:PORT only"
        )));
    }
    let mut cfg = NatsConfig::new(url);
    cfg.stream = args.stream.clone();
    cfg.subject_prefix = args.subject_prefix.clone();
    cfg.duplicate_window = secs(args.duplicate_window, "--duplicate-window")?;
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
    let mut cfg = nats_config(&args.to, &args.nats)?;
    cfg.name = args.name.clone();
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
    let stop = stop_on_signals()?;
    let mut exporter = NatsExporter::new(cfg).map_err(ship_err)?;
    let stats = agent_audit_ship::ship(&args.log, &mut exporter, &opts, &stop).map_err(ship_err)?;
    print_json(&stats);
    Ok(0)
}

pub fn collect(args: CollectArgs) -> Result<u8, AuditError> {
    let cfg = nats_config(&args.from, &args.nats)?;
    let mut opts = CollectOptions::new(&args.to);
    opts.trusted_keys = super::load_keys(&args.trust)?;
    opts.until_idle = args
        .until_idle
        .map(|s| secs(s, "--until-idle"))
        .transpose()?;
    let stop = stop_on_signals()?;
    let mut source = NatsSource::new(cfg, &args.durable, args.max_ack_pending).map_err(ship_err)?;
    let stats = agent_audit_ship::collect(&mut source, &opts, &stop).map_err(ship_err)?;
    print_json(&stats);
    Ok(u8::from(stats.quarantined_streams > 0))
}
