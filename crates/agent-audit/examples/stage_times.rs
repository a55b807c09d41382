//! Times each stage of the writer on one typical tool-call event, on one
//! thread, so a change to a stage can be measured without the queue or
//! the disk: policy, encode (ids, redaction, canonical parts, digests),
//! seal (envelope text, record hash, Merkle leaf, line), and dropping the
//! event.
//!
//! ```sh
//! cargo run --release -p agent-audit --example stage_times -- 200000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_audit::chain::ChainWriter;
use agent_audit::encode::{EncoderSettings, RecordEncoder};
use agent_audit::envelope::Envelope;
use agent_audit::keys::KeyPair;
use agent_audit::policy::PolicyEngine;
use agent_audit::redact::{RedactionConfig, Redactor};
use agent_audit::{Event, SpanId, TraceId};

#[path = "shared/typical.rs"]
mod typical;

// As the bindings, the binary and the core benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map_or(Ok(200_000), |s| s.parse())?;
    parts(n)?;
    let trace = TraceId::random();
    let parent = SpanId::random();
    let policy = PolicyEngine::builtin()?;
    let redactor = Arc::new(Redactor::new(RedactionConfig::default())?);
    let settings = EncoderSettings {
        retention_class: "standard_7y".into(),
        policy_version: Some(policy.version().to_string()),
        ..Default::default()
    };
    let mut encoder = RecordEncoder::new(settings, redactor, None)?;
    let mut chain = ChainWriter::new(
        "01a237d7-e09d-7cef-b65d-dc31e3ff90fd".into(),
        Arc::new(KeyPair::generate()?),
        false,
    );
    let mut env = Envelope::new();
    let mut out = Vec::with_capacity(1 << 20);
    let mut events: Vec<Event> = (0..n)
        .map(|i| typical::tool_event(i, trace, parent))
        .collect();
    let (mut t_policy, mut t_encode, mut t_seal) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut flagged = 0usize;
    let t0 = Instant::now();
    for e in &mut events {
        flagged += policy.observe(e).len();
    }
    t_policy += t0.elapsed();
    let mut kept = Vec::with_capacity(events.len());
    for e in events {
        let t = Instant::now();
        encoder.encode(e, &mut env)?;
        let t1 = Instant::now();
        chain.seal_envelope(&mut env, encoder.payload(), &mut out)?;
        let t2 = Instant::now();
        t_encode += t1 - t;
        t_seal += t2 - t1;
        if out.len() > (1 << 20) - 4096 {
            kept.push(out.len());
            out.clear();
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{n} events: policy {:.2} µs, encode {:.2} µs, seal {:.2} µs, total {:.2} µs/event ({flagged} verdicts)",
        per(t_policy),
        per(t_encode),
        per(t_seal),
        per(t_policy + t_encode + t_seal)
    );
    Ok(())
}

/// The encoder's pieces on their own: canonical text of the two payload
/// parts, their redaction, the body's serialization, dropping the events.
fn parts(n: u64) -> Result<(), Box<dyn std::error::Error>> {
    use agent_audit::redact::RedactionReport;
    let redactor = Redactor::new(RedactionConfig::default())?;
    let trace = TraceId::random();
    let parent = SpanId::random();
    let evs: Vec<Event> = (0..n)
        .map(|i| typical::tool_event(i, trace, parent))
        .collect();
    let mut vals: Vec<serde_json::Value> = evs
        .iter()
        .flat_map(|e| e.payload.values().cloned())
        .collect();
    let t = Instant::now();
    let mut buf = Vec::new();
    for v in &vals {
        buf.clear();
        agent_audit::jcs::canonicalize_into(v, &mut buf)?;
    }
    let canon = t.elapsed();
    let t = Instant::now();
    let mut rep = RedactionReport::default();
    for v in &mut vals {
        redactor.redact_value(v, &mut rep);
    }
    let red = t.elapsed();
    let t = Instant::now();
    let mut s = Vec::new();
    for e in &evs {
        s.clear();
        serde_json::to_writer(&mut s, &e.body)?;
    }
    let body = t.elapsed();
    let t = Instant::now();
    drop(evs);
    let dr = t.elapsed();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "canonicalize 2 parts {:.2} µs, redact 2 parts {:.2} µs, body serde {:.2} µs, drop event {:.2} µs",
        per(canon),
        per(red),
        per(body),
        per(dr)
    );
    Ok(())
}
