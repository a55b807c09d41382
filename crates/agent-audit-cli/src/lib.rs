//! The `agent-audit` command as a library: keygen, ingest, verify, traces,
//! show, prove, verify-proof, erase, review, score, and (feature `ship`,
//! on by default) ship and collect. The binary, `python -m agent_audit`
//! and `npx agent-audit` all call [`run_cli`], so every language runs the
//! same code. Exit codes: 0 clean, 1 tampered (verify) or lines rejected
//! (ingest), 2 unusable input or bad arguments.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use agent_audit::keys::{KeyPair, PublicKey};
use agent_audit::policy::PolicyEngine;
use agent_audit::policy::score::{review_queue, score_log};
use agent_audit::trace::{TraceFilter, list_traces, render_trace, show_trace};
use agent_audit::verify::VerifyOptions;
use agent_audit::{
    AuditError, AuditLog, KeySource, LogConfig, Overflow, PolicySource, Principal, Timestamp,
};
use clap::{Parser, Subcommand};
use std::sync::Arc;

#[cfg(feature = "ship")]
mod ship_cmd;

/// Runs the command line with `args` (the first is the program name) and
/// returns the process exit code. Usage errors print to stderr and give 2;
/// `--help` and `--version` print to stdout and give 0.
pub fn run_cli<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent-audit: error: {e}");
            2
        }
    }
}

#[derive(Parser)]
#[command(
    name = "agent-audit",
    version,
    about = "Tamper-evident audit logs for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an Ed25519 signing key (PKCS#8 PEM, mode 0600) and its public key.
    Keygen {
        /// Private key file to create.
        #[arg(long, default_value = "audit-signing-key.pem")]
        out: PathBuf,
        /// Public key file (default: OUT with .pub.pem).
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
    /// Write events given as JSON lines on stdin to a new stream in LOG.
    Ingest {
        /// Log directory.
        log: PathBuf,
        /// Signing key (PKCS#8 PEM); default: the log's development key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Default tenant id.
        #[arg(long)]
        tenant_id: Option<String>,
        /// Default agent id.
        #[arg(long)]
        agent_id: Option<String>,
        /// Policy file (TOML); default: the built-in rule pack.
        #[arg(long, conflicts_with = "no_policy")]
        policy: Option<PathBuf>,
        /// Apply no policy at all.
        #[arg(long)]
        no_policy: bool,
    },
    /// Check every record, chain link, checkpoint and signature of LOG.
    Verify {
        /// Log directory or one stream directory.
        log: PathBuf,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
        /// Trusted public key(s); streams signed by others are reported.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Also check every stream against a witness's co-signatures:
        /// a witness.jsonl file or a directory holding them (a central log
        /// written by `collect --witness-key`). Finds a tail cut after the
        /// records were shipped.
        #[arg(long, value_name = "PATH", requires = "witness_keys")]
        witness: Option<PathBuf>,
        /// The witness's public key (PEM); repeat for several.
        #[arg(long = "witness-key", value_name = "PUB.pem", requires = "witness")]
        witness_keys: Vec<PathBuf>,
    },
    /// List the traces (agent tasks) in LOG.
    Traces {
        /// Log directory.
        log: PathBuf,
        /// Only traces with this risk flag.
        #[arg(long)]
        flag: Option<String>,
        /// Only traces started at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one trace as a timeline.
    Show {
        /// Log directory.
        log: PathBuf,
        /// Trace id.
        trace: String,
        /// The trace document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an inclusion proof of one record (by event_id).
    Prove {
        /// Log directory.
        log: PathBuf,
        /// The record's event_id.
        event: String,
    },
    /// Check an inclusion proof offline.
    VerifyProof {
        /// Proof file (JSON from `prove`), or - for stdin.
        proof: PathBuf,
        /// Trusted public key(s).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// List the traces a `review` rule put on the review queue.
    Review {
        /// Log directory.
        log: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Each trace's risk score, compliance tier and unmet requirements.
    Score {
        /// Log directory.
        log: PathBuf,
        /// Only this trace.
        trace: Option<String>,
        /// Policy file whose tiers to apply; default: the built-in tiers.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Erase the payloads of records (GDPR Art. 17); hashes stay valid.
    Erase {
        /// Log directory.
        log: PathBuf,
        /// event_id(s) whose payload to erase.
        #[arg(required = true)]
        events: Vec<String>,
        /// Reason recorded in place of the payload.
        #[arg(long, default_value = "erasure request")]
        reason: String,
    },
    /// Follow LOG like `tail -F` and ship every record to a broker or an
    /// OTLP receiver (at least once, resuming from a cursor kept in LOG).
    #[cfg(feature = "ship")]
    Ship(ship_cmd::ShipArgs),
    /// Consume shipped records, re-verify every stream, and write a central
    /// log partitioned by tenant and retention class (exit 1 when a stream
    /// was quarantined).
    #[cfg(feature = "ship")]
    Collect(ship_cmd::CollectArgs),
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, AuditError> {
    paths.iter().map(|p| PublicKey::load(p)).collect()
}

fn to_json(v: &impl serde::Serialize) -> Result<String, AuditError> {
    serde_json::to_string_pretty(v)
        .map_err(|e| AuditError::new(agent_audit::ErrorKind::InvalidLog, e.to_string()))
}

fn run(cmd: Command) -> Result<u8, AuditError> {
    match cmd {
        #[cfg(feature = "ship")]
        Command::Ship(args) => ship_cmd::ship(args),
        #[cfg(feature = "ship")]
        Command::Collect(args) => ship_cmd::collect(args),
        Command::Review { log, json } => {
            let queue = review_queue(&log)?;
            if json {
                println!("{}", to_json(&queue)?);
                return Ok(0);
            }
            let traces = queue["traces"].as_array().cloned().unwrap_or_default();
            if traces.is_empty() {
                println!("review queue is empty");
            }
            for t in traces {
                println!(
                    "{}  since {}",
                    t["trace_id"].as_str().unwrap_or(""),
                    t["since"].as_str().unwrap_or("")
                );
                for v in t["verdicts"].as_array().into_iter().flatten() {
                    println!(
                        "  {}  {}  tool={}  {}",
                        v["ts"].as_str().unwrap_or(""),
                        v["rule_id"].as_str().unwrap_or(""),
                        v["tool"].as_str().unwrap_or("-"),
                        v["reason"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        Command::Score {
            log,
            trace,
            policy,
            json,
        } => {
            let engine = match policy {
                Some(p) => PolicyEngine::from_file(&p)?,
                None => PolicyEngine::builtin()?,
            };
            let report = score_log(&log, trace.as_deref(), &engine)?;
            if json {
                println!("{}", to_json(&report)?);
                return Ok(0);
            }
            for t in report["traces"].as_array().into_iter().flatten() {
                let unmet = t["unmet"].as_array().cloned().unwrap_or_default();
                println!(
                    "{}  score {:>3}  tier {:<8} {}",
                    t["trace_id"].as_str().unwrap_or(""),
                    t["score"].as_u64().unwrap_or(0),
                    t["tier"].as_str().unwrap_or(""),
                    if unmet.is_empty() {
                        "compliant".to_string()
                    } else {
                        format!("{} unmet", unmet.len())
                    }
                );
                for u in unmet {
                    println!(
                        "  unmet {}: {}{}",
                        u["requirement"].as_str().unwrap_or(""),
                        u["reason"].as_str().unwrap_or(""),
                        u["span_id"]
                            .as_str()
                            .map(|s| format!(" (span {s})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
        Command::Keygen { out, public_out } => {
            let key = KeyPair::generate()?;
            key.save(&out)?;
            let pub_path = public_out.unwrap_or_else(|| out.with_extension("pub.pem"));
            std::fs::write(&pub_path, key.public().to_pem()?)
                .map_err(|e| AuditError::io(format!("cannot write {}", pub_path.display()), e))?;
            println!("key id {}", key.key_id());
            println!("private key {} (mode 0600)", out.display());
            println!("public key {}", pub_path.display());
            Ok(0)
        }
        Command::Ingest {
            log,
            key,
            tenant_id,
            agent_id,
            policy,
            no_policy,
        } => {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| AuditError::io("cannot read stdin", e))?;
            let (events, rejected) = agent_audit::ingest::parse_event_lines(&input);
            let mut config = LogConfig::new(&log);
            if let Some(k) = key {
                config.key = KeySource::File(k);
            }
            config.principal = Principal {
                tenant_id,
                agent_id,
                ..Default::default()
            };
            config.policy = match (policy, no_policy) {
                (_, true) => PolicySource::Off,
                (Some(p), _) => PolicySource::Engine(Arc::new(PolicyEngine::from_file(&p)?)),
                (None, false) => PolicySource::Builtin,
            };
            // Every accepted line must be written: wait for room.
            config.overflow = Overflow::Block(Duration::from_secs(60));
            let audit = AuditLog::open(config)?;
            let mut written = 0u64;
            for (_, event) in events {
                if audit.emit(event)? {
                    written += 1;
                }
            }
            let ok = audit.shutdown(Duration::from_secs(60));
            for r in &rejected {
                eprintln!("line {}: rejected: {}", r.line, r.reason);
            }
            eprintln!(
                "ingested {written} event(s) into stream {}; rejected {}",
                audit.stream_id(),
                rejected.len()
            );
            if !ok {
                return Err(AuditError::new(
                    agent_audit::ErrorKind::Io,
                    "could not finish writing the stream",
                ));
            }
            Ok(u8::from(!rejected.is_empty()))
        }
        Command::Verify {
            log,
            json,
            keys,
            witness,
            witness_keys,
        } => {
            let opts = VerifyOptions {
                trusted_keys: load_keys(&keys)?,
            };
            let witness = match &witness {
                Some(w) => Some(agent_audit::witness::WitnessSet::load(
                    w,
                    &load_keys(&witness_keys)?,
                )?),
                None => None,
            };
            let report = agent_audit::verify::verify_log_witnessed(&log, &opts, witness.as_ref())?;
            if json {
                println!("{}", to_json(&report)?);
            } else {
                for s in &report.streams {
                    println!(
                        "stream {}  records {}  checkpoints verified {}  key {}  status {:?}",
                        s.stream_id,
                        s.records,
                        s.checkpoints_verified,
                        s.key_id.as_deref().unwrap_or("-"),
                        s.status
                    );
                }
                for f in &report.findings {
                    let loc = match (&f.file, f.offset) {
                        (Some(p), Some(o)) => format!(" {}@{}", p.display(), o),
                        _ => String::new(),
                    };
                    let seq = f.seq.map(|s| format!(" seq {s}")).unwrap_or_default();
                    println!(
                        "{:?} {:?} stream {}{seq}{loc}: {}",
                        f.severity, f.code, f.stream_id, f.message
                    );
                }
                println!(
                    "{}: {} records in {} stream(s)",
                    if report.is_tampered() {
                        "TAMPERED"
                    } else {
                        "OK"
                    },
                    report.records,
                    report.streams.len()
                );
            }
            Ok(u8::from(report.is_tampered()))
        }
        Command::Traces {
            log,
            flag,
            since,
            json,
        } => {
            let filter = TraceFilter {
                flag,
                since: since.as_deref().map(Timestamp::parse_rfc3339).transpose()?,
            };
            let traces = list_traces(&log, &filter)?;
            if json {
                println!("{}", to_json(&traces)?);
            } else {
                for t in traces {
                    println!(
                        "{}  {}  {:<28} steps {:>3}  {:<10} risk {:>3} {}",
                        t.trace_id,
                        t.started_at.as_deref().unwrap_or("-"),
                        t.task_kind.as_deref().unwrap_or("-"),
                        t.steps,
                        t.outcome,
                        t.risk_score,
                        t.risk_flags.join(",")
                    );
                }
            }
            Ok(0)
        }
        Command::Show { log, trace, json } => {
            let doc = show_trace(&log, &trace)?;
            if json {
                println!("{}", to_json(&doc)?);
            } else {
                print!("{}", render_trace(&doc));
            }
            Ok(0)
        }
        Command::Prove { log, event } => {
            let bundle = agent_audit::proof::prove(&log, &event)?;
            println!("{}", to_json(&bundle)?);
            Ok(0)
        }
        Command::VerifyProof { proof, keys } => {
            let text = if proof.as_os_str() == "-" {
                let mut s = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut s)
                    .map_err(|e| AuditError::io("cannot read stdin", e))?;
                s
            } else {
                std::fs::read(&proof)
                    .map_err(|e| AuditError::io(format!("cannot read {}", proof.display()), e))?
            };
            let bundle = agent_audit::jcs::parse_strict(&text)?;
            match agent_audit::proof::check_proof(&bundle, &load_keys(&keys)?) {
                Ok(c) => {
                    println!(
                        "OK: record seq {} ({}) is in stream {} under the checkpoint of {} records signed by key {}",
                        c.seq, c.record_hash, c.stream_id, c.tree_size, c.key_id
                    );
                    Ok(0)
                }
                Err(e) => {
                    println!("INVALID: {e}");
                    Ok(1)
                }
            }
        }
        Command::Erase {
            log,
            events,
            reason,
        } => {
            let n = agent_audit::verify::erase_payloads(&log, &events, &reason)?;
            println!("erased {n} payload(s)");
            Ok(0)
        }
    }
}
