//! One agent process for `scripts/ship-scale.sh`: writes N realistic
//! events (support tasks of eight steps: trace_start, llm_call, decision,
//! three tool calls, a second llm_call, trace_end) through the core writer
//! into its own log directory, optionally with the in-process exporter
//! (`background::spawn_exporter`) attached, then shuts the log down,
//! drains the exporter, and prints one JSON line of figures.
//!
//! ```sh
//! cargo run --release -p agent-audit-ship --example ship_agent -- \
//!     LOG N KEY.pem TENANT [nats://HOST:PORT]
//! ```
//! Without a URL the log is only written (ship it with a sidecar,
//! `agent-audit ship LOG --to nats://…`).

use std::time::{Duration, Instant};

use agent_audit::record::{
    Body, Counter, Decision, LlmCall, ModelInfo, Outcome, ResultStatus, ToolCall, ToolInfo,
    TraceEnd, TraceStart,
};
use agent_audit::{
    AuditLog, Event, KeySource, LogConfig, Overflow, PayloadPart, Principal, SpanId, TraceId,
};
use agent_audit_ship::ShipOptions;
use agent_audit_ship::background::{ExportTarget, spawn_exporter};
use serde_json::json;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn tool(name: &str, version: &str, ms: f64) -> Body {
    Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: name.into(),
            version: Some(version.into()),
            ..Default::default()
        },
        outcome: Outcome {
            result_status: Some(ResultStatus::Ok),
            duration_ms: Some(ms),
            error_type: None,
        },
        ..Default::default()
    })
}

fn llm(input: u64, output: u64) -> Body {
    Body::LlmCall(LlmCall {
        model: ModelInfo {
            name: "claude-opus".into(),
            version: Some("claude-opus-4-1-20250805".into()),
            provider: Some("anthropic".into()),
        },
        outcome: Outcome {
            result_status: Some(ResultStatus::Ok),
            duration_ms: Some(1840.0),
            error_type: None,
        },
        input_tokens: Some(Counter(input)),
        output_tokens: Some(Counter(output)),
        cost_usd: Some(0.0213),
        finish_reason: Some("tool_use".into()),
        ..Default::default()
    })
}

/// Event `i` of the run: step `i % 8` of task `i / 8`.
fn event(agent: &str, task: u64, step: u64, trace: TraceId, root: SpanId) -> Event {
    let ticket = format!("TCK-{agent}-{task:06}");
    let (body, parts): (Body, Vec<(PayloadPart, serde_json::Value)>) = match step {
        0 => (
            Body::TraceStart(TraceStart {
                task_kind: "customer_support_resolution".into(),
                ..Default::default()
            }),
            vec![(
                PayloadPart::Input,
                json!({"ticket": ticket, "subject": "Refund for a double charge",
                       "body": "Hi, I was charged twice for order 88231. Please refund one. Jane (jane.doe@example.com)"}),
            )],
        ),
        1 => (
            llm(1420, 312),
            vec![(
                PayloadPart::Messages,
                json!([{"role": "system", "content": "You are a support agent. Use the tools."},
                       {"role": "user", "content": format!("Ticket {ticket}: charged twice for order 88231")}]),
            )],
        ),
        2 => (
            Body::Decision(Decision {
                decision: "call_tools".into(),
                tools: vec!["crm.lookup_customer".into(), "billing.list_charges".into()],
                confidence: Some(0.92),
            }),
            vec![],
        ),
        3 => (
            tool("crm.lookup_customer", "1.4.0", 8.2),
            vec![
                (PayloadPart::Args, json!({"email": "jane.doe@example.com"})),
                (
                    PayloadPart::Result,
                    json!({"customer_id": format!("cus_{task:08}"), "tier": "gold", "since": "2021-04-02"}),
                ),
            ],
        ),
        4 => (
            tool("billing.list_charges", "3.0.2", 23.5),
            vec![
                (
                    PayloadPart::Args,
                    json!({"customer_id": format!("cus_{task:08}"), "order": 88231}),
                ),
                (
                    PayloadPart::Result,
                    json!({"charges": [{"id": "ch_1", "amount": 4999, "currency": "EUR"},
                                       {"id": "ch_2", "amount": 4999, "currency": "EUR"}]}),
                ),
            ],
        ),
        5 => (
            llm(2210, 188),
            vec![(
                PayloadPart::Completion,
                json!({"text": "Two identical charges found; refunding ch_2.", "tool": "billing.refund"}),
            )],
        ),
        6 => (
            tool("billing.refund", "3.0.2", 140.0),
            vec![
                (
                    PayloadPart::Args,
                    json!({"charge_id": "ch_2", "amount": 4999, "reason": "duplicate"}),
                ),
                (
                    PayloadPart::Result,
                    json!({"refund_id": format!("re_{task:08}"), "status": "succeeded"}),
                ),
            ],
        ),
        _ => (
            Body::TraceEnd(TraceEnd {
                outcome: "completed".into(),
                duration_ms: Some(4210.0),
                error_type: None,
            }),
            vec![(
                PayloadPart::Output,
                json!({"reply": "We refunded the duplicate charge of EUR 49.99.", "ticket": ticket}),
            )],
        ),
    };
    let (span, parent) = if step == 0 {
        (root, None)
    } else {
        (SpanId::random(), Some(root))
    };
    let mut e = Event::new(body).in_trace(trace, span, parent);
    for (part, value) in parts {
        e = e.with_part(part, value);
    }
    e
}

/// CPU time of this process so far (all threads), in seconds.
fn process_cpu_s() -> f64 {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
    }
    #[cfg(not(unix))]
    {
        f64::NAN
    }
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [log_dir, n, key, tenant, rest @ ..] = args.as_slice() else {
        return Err("usage: ship_agent LOG N KEY.pem TENANT [nats://HOST:PORT]".into());
    };
    let n: u64 = n.parse()?;
    let agent = std::path::Path::new(log_dir)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("agent")
        .to_string();

    let mut config = LogConfig::new(log_dir);
    config.key = KeySource::File(key.into());
    config.principal = Principal {
        tenant_id: Some(tenant.clone()),
        agent_id: Some(format!("support-agent-{agent}")),
        ..Default::default()
    };
    // Every event must arrive: wait for room rather than drop.
    config.overflow = Overflow::Block(Duration::from_secs(60));
    let t0 = Instant::now();
    let log = AuditLog::open(config)?;
    let exporter = match rest.first() {
        Some(url) => Some(spawn_exporter(
            log_dir,
            ExportTarget::url(url)?,
            ShipOptions::default(),
        )?),
        None => None,
    };

    let mut trace = TraceId::random();
    let mut root = SpanId::random();
    let mut in_emit = Duration::ZERO;
    for i in 0..n {
        let (task, step) = (i / 8, i % 8);
        if step == 0 {
            trace = TraceId::random();
            root = SpanId::random();
        }
        let e = event(&agent, task, step, trace, root);
        let t = Instant::now();
        log.emit(e)?;
        in_emit += t.elapsed();
    }
    let emitted = t0.elapsed();
    if !log.shutdown(Duration::from_secs(300)) {
        return Err("the writer did not shut down".into());
    }
    let written = t0.elapsed();
    let (drained, exporter_stats) = match &exporter {
        Some(x) => {
            let ok = x.drain(Duration::from_secs(600));
            (Some(ok), Some(x.stats()))
        }
        None => (None, None),
    };
    let stats = log.stats();
    println!(
        "{}",
        json!({
            "agent": agent,
            "stream_id": log.stream_id(),
            "events": n,
            "records_written": stats.written,
            "dropped": stats.dropped,
            "emit_ns_per_call": in_emit.as_nanos() as f64 / n.max(1) as f64,
            "emit_s": emitted.as_secs_f64(),
            "written_s": written.as_secs_f64(),
            "shipped_s": t0.elapsed().as_secs_f64(),
            "drained": drained,
            "cpu_s": process_cpu_s(),
            "exporter": exporter_stats,
        })
    );
    Ok(())
}
