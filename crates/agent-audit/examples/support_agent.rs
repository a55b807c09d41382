//! A customer-support agent task written through the core library: two
//! LLM calls, tool calls (one of which fails and is retried), a sub-agent,
//! a guardrail verdict, a human approval before an external e-mail, and a
//! memory write. Run it, then verify and show the log:
//!
//! ```sh
//! cargo run -p agent-audit --example support_agent -- ./audit-demo
//! agent-audit verify ./audit-demo
//! agent-audit show ./audit-demo <trace_id>
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_audit::record::{
    AgentSpawn, Body, Decision, DocRef, Guardrail, GuardrailVerdict, HumanReview, LlmCall,
    MemoryOp, ModelInfo, Outcome, ResultStatus, Retrieval, ToolCall, ToolInfo, TraceEnd,
    TraceStart,
};
use agent_audit::record::{Caller, Counter};
use agent_audit::{
    AuditLog, Event, LogConfig, PayloadPart, Principal, Risk, SpanId, Timestamp, TraceId,
};
use serde_json::json;

struct Step<'a> {
    log: &'a AuditLog,
    trace: TraceId,
    principal: Arc<Principal>,
}

impl Step<'_> {
    fn emit(
        &self,
        span: SpanId,
        parent: Option<SpanId>,
        ts: Timestamp,
        body: Body,
        parts: Vec<(PayloadPart, serde_json::Value)>,
        risk: Risk,
    ) -> Result<(), agent_audit::AuditError> {
        let mut e = Event::new(body).in_trace(self.trace, span, parent);
        e.ts = ts;
        e.principal = Some(self.principal.clone());
        e.risk = risk;
        for (p, v) in parts {
            e.payload.insert(p, v);
        }
        self.log.emit(e)?;
        Ok(())
    }
}

fn tool(name: &str, version: &str, status: ResultStatus, ms: f64) -> Body {
    Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: name.into(),
            version: Some(version.into()),
            ..Default::default()
        },
        outcome: Outcome {
            result_status: Some(status),
            duration_ms: Some(ms),
            error_type: None,
        },
        permissions_used: vec!["data_access:read".into()],
        data_classification: Some("confidential".into()),
        environment: Some("production".into()),
        ..Default::default()
    })
}

fn llm(input: u64, output: u64, ms: f64, tools: &[&str]) -> Body {
    Body::LlmCall(LlmCall {
        model: ModelInfo {
            name: "claude-opus".into(),
            version: Some("claude-opus-4-20260301".into()),
            provider: Some("anthropic".into()),
        },
        outcome: Outcome {
            result_status: Some(ResultStatus::Ok),
            duration_ms: Some(ms),
            error_type: None,
        },
        input_tokens: Some(Counter(input)),
        output_tokens: Some(Counter(output)),
        cost_usd: Some((input as f64 * 3.0 + output as f64 * 15.0) / 1e6),
        params: json!({"temperature": 0.2, "max_tokens": 1024})
            .as_object()
            .cloned(),
        system_prompt_version: Some("support-v17".into()),
        finish_reason: Some(
            if tools.is_empty() {
                "end_turn"
            } else {
                "tool_use"
            }
            .into(),
        ),
        tool_calls_requested: tools.iter().map(|t| t.to_string()).collect(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // support_agent [LOG_DIR] [SIGNING_KEY.pem]; without a key the log
    // makes a development key (with a warning).
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "./audit-demo".into());
    let mut config = LogConfig::new(&dir);
    if let Some(key) = args.next() {
        config.key = agent_audit::KeySource::File(key.into());
    }
    config.principal = Principal {
        tenant_id: Some("t_acme".into()),
        agent_id: Some("support-agent-v2".into()),
        ..Default::default()
    };
    config.policy_version = Some("guardrails:2026-11-01".into());
    let log = AuditLog::open(config)?;

    let trace = TraceId::random();
    let s = Step {
        log: &log,
        trace,
        principal: Arc::new(Principal {
            user_id: Some("u_abc".into()),
            session_id: Some("sess_81f2".into()),
            caller: Some(Caller::Human),
            ..Default::default()
        }),
    };
    let t0 = Timestamp::now();
    let clock = Instant::now();
    let at = |ms: i64| Timestamp(t0.0 + ms * 1_000_000);
    let root = SpanId::random();
    let ticket = json!({"ticket": "T-45678", "from": "jane.doe@example.com", "body": "I was charged twice on card 4111 1111 1111 1111, please refund. Call me at +1 415 555 0132."});
    s.emit(
        root,
        None,
        at(0),
        Body::TraceStart(TraceStart {
            task_kind: "customer_support_resolution".into(),
            authorization_method: Some("oauth".into()),
            data_classification: Some("confidential".into()),
            environment: Some("production".into()),
            system_prompt_version: Some("support-v17".into()),
        }),
        vec![(PayloadPart::Input, ticket.clone())],
        Risk::default(),
    )?;

    s.emit(
        SpanId::random(),
        Some(root),
        at(1),
        Body::Guardrail(Guardrail {
            guardrails: vec![GuardrailVerdict {
                id: "prompt_guard".into(),
                version: Some("2".into()),
                verdict: "BENIGN".into(),
                score: Some(0.99),
            }],
            target: Some("input".into()),
            action: Some("allow".into()),
        }),
        vec![],
        Risk::default(),
    )?;
    s.emit(
        SpanId::random(),
        Some(root),
        at(2),
        llm(1420, 312, 840.0, &["billing.lookup", "kb.search"]),
        vec![
            (
                PayloadPart::Messages,
                json!([{"role": "user", "content": ticket["body"]}]),
            ),
            (
                PayloadPart::Completion,
                json!("I'll look up the billing history and the refund policy."),
            ),
        ],
        Risk::default(),
    )?;
    s.emit(
        SpanId::random(),
        Some(root),
        at(843),
        Body::Decision(Decision {
            decision: "call_tools".into(),
            tools: vec!["billing.lookup".into(), "kb.search".into()],
            confidence: Some(0.92),
        }),
        vec![(
            PayloadPart::Reasoning,
            json!("Duplicate charge claimed; verify in billing before refunding."),
        )],
        Risk::default(),
    )?;
    s.emit(
        SpanId::random(),
        Some(root),
        at(844),
        tool("billing.lookup", "2.3.1", ResultStatus::Error, 5003.0),
        vec![
            (
                PayloadPart::Args,
                json!({"customer_email": "jane.doe@example.com", "days": 30}),
            ),
            (
                PayloadPart::Error,
                json!({"type": "TimeoutError", "message": "upstream timed out"}),
            ),
        ],
        Risk::default(),
    )?;
    s.emit(SpanId::random(), Some(root), at(5850), tool("billing.lookup", "2.3.1", ResultStatus::Ok, 84.0), vec![(PayloadPart::Args, json!({"customer_email": "jane.doe@example.com", "days": 30})), (PayloadPart::Result, json!({"charges": [{"id": "ch_1", "amount": 49.0}, {"id": "ch_2", "amount": 49.0}]}))], Risk::default())?;
    s.emit(
        SpanId::random(),
        Some(root),
        at(5940),
        Body::Retrieval(Retrieval {
            source: Some("kb".into()),
            retrieved_docs: vec![DocRef {
                id: "doc_kb_142".into(),
                hash: Some("sha256:9b1c".into()),
                score: Some(0.83),
            }],
            outcome: Outcome {
                result_status: Some(ResultStatus::Ok),
                duration_ms: Some(31.0),
                error_type: None,
            },
        }),
        vec![(PayloadPart::Query, json!("refund policy duplicate charge"))],
        Risk::default(),
    )?;

    // A sub-agent drafts the reply; its steps nest under the spawn span.
    let spawn = SpanId::random();
    s.emit(
        SpanId::random(),
        Some(spawn),
        at(6001),
        llm(610, 190, 420.0, &[]),
        vec![(
            PayloadPart::Completion,
            json!("Dear Jane, we refunded the duplicate charge of $49.00."),
        )],
        Risk::default(),
    )?;
    s.emit(
        spawn,
        Some(root),
        at(6000),
        Body::AgentSpawn(AgentSpawn {
            child_agent_id: "reply-drafter-v1".into(),
            outcome: Outcome {
                result_status: Some(ResultStatus::Ok),
                duration_ms: Some(430.0),
                error_type: None,
            },
            task_kind: Some("draft_reply".into()),
        }),
        vec![],
        Risk::default(),
    )?;

    s.emit(
        SpanId::random(),
        Some(root),
        at(6440),
        tool("payments.refund", "1.4.0", ResultStatus::Ok, 210.0),
        vec![(
            PayloadPart::Args,
            json!({"charge_id": "ch_2", "amount": 49.0}),
        )],
        Risk {
            flags: vec!["moves_money".into()],
            score: 20,
        },
    )?;
    let email = SpanId::random();
    s.emit(
        SpanId::random(),
        Some(root),
        at(6660),
        Body::HumanReview(HumanReview {
            decision: "approved".into(),
            reviewer: Some("operator-jane".into()),
            subject_span_id: Some(email.to_string()),
            decided_at: Some(at(7900).to_rfc3339()),
            wait_ms: Some(1240.0),
            rule_id: Some("external_message_needs_approval".into()),
        }),
        vec![(PayloadPart::Reason, json!("Reply is accurate and polite."))],
        Risk::default(),
    )?;
    s.emit(email, Some(root), at(7901), tool("email.send", "3.0.2", ResultStatus::Ok, 210.0), vec![(PayloadPart::Args, json!({"to": "jane.doe@example.com", "subject": "Your refund", "body": "Dear Jane, we refunded the duplicate charge of $49.00."}))], Risk { flags: vec!["sends_external_message".into()], score: 30 })?;
    s.emit(
        SpanId::random(),
        Some(root),
        at(8112),
        Body::Memory(MemoryOp {
            operation: "write".into(),
            store: Some("customer_notes".into()),
            key: Some("T-45678".into()),
        }),
        vec![(
            PayloadPart::Content,
            json!("Refunded duplicate charge ch_2; customer notified."),
        )],
        Risk::default(),
    )?;
    s.emit(
        root,
        None,
        at(8120),
        Body::TraceEnd(TraceEnd {
            outcome: "completed".into(),
            duration_ms: Some(clock.elapsed().as_secs_f64() * 1000.0 + 8120.0),
            error_type: None,
        }),
        vec![(
            PayloadPart::Output,
            json!({"resolution": "refunded", "amount": 49.0}),
        )],
        Risk {
            flags: vec![],
            score: 30,
        },
    )?;

    if !log.flush(Duration::from_secs(10)) || !log.shutdown(Duration::from_secs(10)) {
        return Err("the audit log did not finish writing".into());
    }
    println!("{trace}");
    let _ = Duration::ZERO;
    Ok(())
}
