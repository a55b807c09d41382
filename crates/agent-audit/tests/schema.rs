//! Record format v1: every line a real writer produces validates against
//! `schema/record.v1.schema.json`, and the schema rejects what it should.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_audit::record::{
    AgentSpawn, Caller, Counter, Decision, DocRef, Guardrail, GuardrailVerdict, HumanReview, Kind,
    LlmCall, MemoryOp, ModelInfo, OtelContext, Outcome, PolicyVerdict, ResultStatus, Retrieval,
    ToolCall, ToolInfo, TraceEnd, TraceStart,
};
use agent_audit::verify::{FindingCode, VerifyOptions, erase_payloads, verify_log};
use agent_audit::{
    AuditLog, Body, CaptureMode, Event, LogConfig, PayloadPart, Principal, Risk, SpanId, Timestamp,
    TraceId,
};
use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value, json};

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/record.v1.schema.json");

fn schema() -> Value {
    let text = std::fs::read_to_string(SCHEMA_PATH).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn validator() -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .unwrap()
}

/// Every schema error of `record`, one string each. When a kind's own
/// fields fail, `unevaluatedProperties` also lists every field of that kind
/// as unexpected; that echo is left out unless it is the only error.
fn errors_of(v: &Validator, record: &Value) -> Vec<String> {
    let all: Vec<_> = v.iter_errors(record).collect();
    let is_echo = |e: &jsonschema::ValidationError<'_>| {
        matches!(e.kind(), ValidationErrorKind::UnevaluatedProperties { .. })
    };
    let only_echoes = all.iter().all(is_echo);
    all.iter()
        .filter(|e| only_echoes || !is_echo(e))
        .map(|e| format!("at {:?}: {e}", e.instance_path().as_str()))
        .collect()
}

/// Every segment file of every stream under `dir`, in order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut streams: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    streams.sort();
    for s in streams {
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&s)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("seg-") && name.ends_with(".jsonl")
            })
            .collect();
        segs.sort();
        out.extend(segs);
    }
    out
}

/// Parses every line of every segment under `dir`, validating each one;
/// returns the records and prints (then returns) every failure.
fn validate_log(v: &Validator, dir: &Path) -> (Vec<Value>, Vec<String>) {
    let mut records = Vec::new();
    let mut failures = Vec::new();
    let files = segment_files(dir);
    assert!(
        !files.is_empty(),
        "no segment files under {}",
        dir.display()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON: {e}", file.display(), i + 1));
            for err in errors_of(v, &record) {
                let msg = format!("{}:{}: {err}\n    line: {line}", file.display(), i + 1);
                eprintln!("{msg}");
                failures.push(msg);
            }
            records.push(record);
        }
    }
    (records, failures)
}

struct Ctx {
    trace: TraceId,
    principal: Arc<Principal>,
}

impl Ctx {
    fn event(
        &self,
        span: SpanId,
        parent: Option<SpanId>,
        body: Body,
        parts: Vec<(PayloadPart, Value)>,
    ) -> Event {
        let mut e = Event::new(body).in_trace(self.trace, span, parent);
        e.principal = Some(self.principal.clone());
        for (p, v) in parts {
            e.payload.insert(p, v);
        }
        e
    }
}

fn outcome(status: ResultStatus, ms: f64, error_type: Option<&str>) -> Outcome {
    Outcome {
        result_status: Some(status),
        duration_ms: Some(ms),
        error_type: error_type.map(str::to_string),
    }
}

/// One customer-support task with every submittable kind, every optional
/// field set somewhere, and payload parts of every name.
fn support_task(user: &str) -> Vec<Event> {
    let ctx = Ctx {
        trace: TraceId::random(),
        principal: Arc::new(Principal {
            user_id: Some(user.into()),
            session_id: Some("sess_81f2".into()),
            caller: Some(Caller::Human),
            ..Default::default()
        }),
    };
    let root = SpanId::random();
    let spawn = SpanId::random();
    let email = SpanId::random();
    let ticket = json!({
        "ticket": "T-45678",
        "from": "jane.doe@example.com",
        "body": "I was charged twice on card 4111 1111 1111 1111, please refund."
    });
    let mut events = Vec::new();

    let mut start = ctx.event(
        root,
        None,
        Body::TraceStart(TraceStart {
            task_kind: "customer_support_resolution".into(),
            authorization_method: Some("oauth".into()),
            data_classification: Some("confidential".into()),
            environment: Some("production".into()),
            system_prompt_version: Some("support-v17".into()),
        }),
        vec![(PayloadPart::Input, ticket.clone())],
    );
    start.metadata = json!({"channel": "email", "priority": 2})
        .as_object()
        .cloned();
    start.otel = Some(OtelContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
    });
    events.push(start);

    events.push(ctx.event(
        SpanId::random(),
        Some(root),
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
    ));

    events.push(
        ctx.event(
            SpanId::random(),
            Some(root),
            Body::LlmCall(LlmCall {
                model: ModelInfo {
                    name: "claude-opus".into(),
                    version: Some("claude-opus-4-20260301".into()),
                    provider: Some("anthropic".into()),
                },
                outcome: outcome(ResultStatus::Ok, 840.5, None),
                input_tokens: Some(Counter(1420)),
                output_tokens: Some(Counter(312)),
                cost_usd: Some(0.00894),
                params: json!({"temperature": 0.2, "max_tokens": 1024})
                    .as_object()
                    .cloned(),
                system_prompt_version: Some("support-v17".into()),
                finish_reason: Some("tool_use".into()),
                tool_calls_requested: vec!["billing.lookup".into(), "kb.search".into()],
            }),
            vec![
                (
                    PayloadPart::Messages,
                    json!([{"role": "user", "content": ticket["body"]}]),
                ),
                (PayloadPart::Prompt, json!("You are a support agent.")),
                (
                    PayloadPart::Completion,
                    json!("I'll look up the billing history."),
                ),
            ],
        ),
    );

    events.push(ctx.event(
        SpanId::random(),
        Some(root),
        Body::Decision(Decision {
            decision: "call_tools".into(),
            tools: vec!["billing.lookup".into(), "kb.search".into()],
            confidence: Some(0.92),
        }),
        vec![
            (
                PayloadPart::Reasoning,
                json!("Duplicate charge claimed; verify in billing first."),
            ),
            (
                PayloadPart::Alternatives,
                json!(["escalate_to_human", "call_tools"]),
            ),
        ],
    ));

    let mut failed = ctx.event(
        SpanId::random(),
        Some(root),
        Body::ToolCall(ToolCall {
            tool: ToolInfo {
                name: "billing.lookup".into(),
                version: Some("2.3.1".into()),
                publisher: Some("acme-internal".into()),
                trust_level: Some("gold".into()),
            },
            outcome: outcome(ResultStatus::Timeout, 5003.0, Some("TimeoutError")),
            permissions_used: vec!["data_access:read".into()],
            permissions_denied: vec!["data_access:write".into()],
            data_classification: Some("confidential".into()),
            environment: Some("production".into()),
            authorization_method: Some("client_credentials".into()),
            data_subjects_affected: Some(Counter(1)),
            // Above 2^53-1: written as a decimal string.
            output_bytes: Some(Counter(u64::MAX)),
        }),
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
    );
    failed.risk = Risk {
        flags: vec!["reads_personal_data".into()],
        score: 10,
    };
    events.push(failed);

    events.push(ctx.event(
        SpanId::random(),
        Some(root),
        Body::ToolCall(ToolCall {
            tool: ToolInfo {
                name: "billing.lookup".into(),
                ..Default::default()
            },
            outcome: outcome(ResultStatus::Ok, 84.0, None),
            ..Default::default()
        }),
        vec![
            (
                PayloadPart::Args,
                json!({"customer_email": "jane.doe@example.com", "days": 30}),
            ),
            (
                PayloadPart::Result,
                json!({"charges": [{"id": "ch_1", "amount": 49.0}, {"id": "ch_2", "amount": 49.0}]}),
            ),
        ],
    ));

    events.push(ctx.event(
        SpanId::random(),
        Some(root),
        Body::Retrieval(Retrieval {
            source: Some("kb".into()),
            retrieved_docs: vec![DocRef {
                id: "doc_kb_142".into(),
                hash: Some(format!("sha256:{}", "9b1c".repeat(16))),
                score: Some(0.83),
            }],
            outcome: outcome(ResultStatus::Ok, 31.0, None),
        }),
        vec![
            (PayloadPart::Query, json!("refund policy duplicate charge")),
            (
                PayloadPart::Documents,
                json!([{"id": "doc_kb_142", "text": "Duplicate charges are refunded."}]),
            ),
        ],
    ));

    events.push(ctx.event(
        spawn,
        Some(root),
        Body::AgentSpawn(AgentSpawn {
            child_agent_id: "reply-drafter-v1".into(),
            outcome: outcome(ResultStatus::Ok, 430.0, None),
            task_kind: Some("draft_reply".into()),
        }),
        vec![],
    ));

    events.push(ctx.event(
        SpanId::random(),
        Some(root),
        Body::Policy(PolicyVerdict {
            rule_id: "external_message_needs_approval".into(),
            action: "require_approval".into(),
            tool: Some("email.send".into()),
            subject_span_id: Some(email.to_string()),
            reason: Some("email.send goes outside the company".into()),
        }),
        vec![],
    ));

    events.push(ctx.event(
        SpanId::random(),
        Some(root),
        Body::HumanReview(HumanReview {
            decision: "approved".into(),
            reviewer: Some("operator-jane".into()),
            subject_span_id: Some(email.to_string()),
            decided_at: Some(Timestamp::now().to_rfc3339()),
            wait_ms: Some(1240.0),
            rule_id: Some("external_message_needs_approval".into()),
        }),
        vec![(PayloadPart::Reason, json!("Reply is accurate and polite."))],
    ));

    let mut send = ctx.event(
        email,
        Some(root),
        Body::ToolCall(ToolCall {
            tool: ToolInfo {
                name: "email.send".into(),
                version: Some("3.0.2".into()),
                ..Default::default()
            },
            outcome: outcome(ResultStatus::Ok, 210.0, None),
            ..Default::default()
        }),
        vec![(
            PayloadPart::Args,
            json!({"to": "jane.doe@example.com", "subject": "Your refund"}),
        )],
    );
    send.risk = Risk {
        flags: vec!["sends_external_message".into()],
        score: 30,
    };
    events.push(send);

    events.push(ctx.event(
        SpanId::random(),
        Some(root),
        Body::Memory(MemoryOp {
            operation: "write".into(),
            store: Some("customer_notes".into()),
            key: Some("T-45678".into()),
        }),
        vec![(
            PayloadPart::Content,
            json!("Refunded duplicate charge ch_2; customer notified."),
        )],
    ));

    let mut end = ctx.event(
        root,
        None,
        Body::TraceEnd(TraceEnd {
            outcome: "completed".into(),
            duration_ms: Some(8120.0),
            error_type: None,
        }),
        vec![(
            PayloadPart::Output,
            json!({"resolution": "refunded", "amount": 49.0}),
        )],
    );
    end.risk = Risk {
        flags: vec![],
        score: 30,
    };
    events.push(end);

    // An event outside any trace, with its own retention class and a
    // blocked outcome.
    let mut blocked = Event::new(Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: "shell.exec".into(),
            ..Default::default()
        },
        outcome: outcome(ResultStatus::Blocked, 0.0, Some("ToolBlocked")),
        ..Default::default()
    }));
    blocked.retention_class = Some(Arc::from("security_10y"));
    events.push(blocked);
    events
}

fn config(dir: &Path, capture: CaptureMode) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.capture = capture;
    c.principal = Principal {
        tenant_id: Some("t_acme".into()),
        agent_id: Some("support-agent-v2".into()),
        ..Default::default()
    };
    c.policy_version = Some("guardrails:2026-11-01".into());
    c.checkpoint_every = 5;
    c
}

fn run(config: LogConfig, events: Vec<Event>) -> AuditLog {
    let log = AuditLog::open(config).unwrap();
    for e in events {
        assert!(log.emit(e).unwrap());
    }
    assert!(log.flush(Duration::from_secs(10)));
    log
}

/// Writes four streams into `dir`: one per capture mode (the redacted one
/// signs every record and hashes user ids under a tenant key), per-event
/// capture overrides, and a stream that loses events and records a `gap`.
fn write_logs(dir: &Path) {
    let hash = run(config(dir, CaptureMode::Hash), support_task("u_hash"));
    assert!(hash.shutdown(Duration::from_secs(10)));

    let mut signed = config(dir, CaptureMode::Redacted);
    signed.sign_records = true;
    signed.hashing_key = Some(b"tenant-hashing-key-0123456789abcdef".to_vec());
    signed.hash_user_ids = true;
    let redacted = run(signed, support_task("u_redacted"));
    assert!(redacted.shutdown(Duration::from_secs(10)));

    let mut events = support_task("u_raw");
    // Per-event overrides of the log's capture mode.
    events[1].capture = Some(CaptureMode::Hash);
    events[2].capture = Some(CaptureMode::Redacted);
    let raw = run(config(dir, CaptureMode::Raw), events);
    assert!(raw.shutdown(Duration::from_secs(10)));

    let mut tiny = config(dir, CaptureMode::Redacted);
    tiny.queue_capacity = 1;
    let lossy = AuditLog::open(tiny).unwrap();
    let mut sent = 0u64;
    while lossy.stats().dropped == 0 {
        let e = Event::new(Body::Decision(Decision {
            decision: format!("noop-{sent}"),
            ..Default::default()
        }))
        .with_part(PayloadPart::Reasoning, json!("tight loop"));
        lossy.emit(e).unwrap();
        sent += 1;
        assert!(sent < 50_000_000, "the queue never filled");
    }
    assert!(lossy.shutdown(Duration::from_secs(30)));
    assert!(lossy.stats().dropped > 0);
}

#[test]
fn every_record_of_a_real_log_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_logs(dir);

    let v = validator();
    let (records, failures) = validate_log(&v, dir);
    assert!(
        failures.is_empty(),
        "{} schema errors in {} records:\n{}",
        failures.len(),
        records.len(),
        failures.join("\n")
    );

    let seen: BTreeSet<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for k in Kind::ALL {
        assert!(seen.contains(k.as_str()), "no {k} record was written");
    }
    let captures: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.get("capture").and_then(Value::as_str))
        .collect();
    assert_eq!(
        captures,
        BTreeSet::from(["hash", "raw", "redacted"]),
        "every capture mode is exercised"
    );
    // What the test meant to exercise did reach the log.
    assert!(records.iter().any(|r| r.get("payload").is_some()));
    assert!(
        records
            .iter()
            .any(|r| r["kind"] != "checkpoint" && r.get("sig").is_some())
    );
    assert!(records.iter().any(|r| r["output_bytes"].is_string()));
    assert!(records.iter().any(|r| {
        r["args_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("hmac-sha256:"))
    }));
    assert!(
        records
            .iter()
            .any(|r| r["principal"]["user_id_hash"].is_string())
    );
    assert!(records.iter().any(|r| r["args_redacted"] == true));
    assert!(records.iter().any(|r| r["args_redacted"] == false));
    let gap = records.iter().find(|r| r["kind"] == "gap").unwrap();
    assert!(gap["lost"].as_u64().unwrap() > 0);

    // head.json holds the last checkpoint of each stream: it validates too.
    for s in std::fs::read_dir(dir).unwrap() {
        let head = s.unwrap().path().join("head.json");
        if head.exists() {
            let rec: Value = serde_json::from_slice(&std::fs::read(&head).unwrap()).unwrap();
            assert_eq!(rec["kind"], "checkpoint");
            let errs = errors_of(&v, &rec);
            assert!(errs.is_empty(), "{}: {errs:?}", head.display());
        }
    }

    // Erase one payload: the line keeps validating, the log still verifies.
    let victim = records
        .iter()
        .find(|r| r["kind"] == "tool_call" && r["payload"]["data"]["args"].is_object())
        .unwrap();
    let id = victim["event_id"].as_str().unwrap().to_string();
    let n = erase_payloads(dir, std::slice::from_ref(&id), "gdpr-request-4711").unwrap();
    assert_eq!(n, 1);
    let (after, failures) = validate_log(&v, dir);
    assert!(
        failures.is_empty(),
        "after erasure:\n{}",
        failures.join("\n")
    );
    let erased = after.iter().find(|r| r["event_id"] == id.as_str()).unwrap();
    assert_eq!(erased["payload"]["erased"], true);
    assert_eq!(erased["payload_digest"], victim["payload_digest"]);
    let report = verify_log(dir, &VerifyOptions::default()).unwrap();
    assert!(!report.is_tampered(), "{:#?}", report.findings);
    assert_eq!(report.with_code(FindingCode::ErasedPayload).len(), 1);
}

/// A small real log's records by kind, for the negative tests.
fn sample_records() -> BTreeMap<String, Value> {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path(), CaptureMode::Redacted);
    c.sign_records = true;
    let log = run(c, support_task("u_neg"));
    assert!(log.shutdown(Duration::from_secs(10)));
    let v = validator();
    let (records, failures) = validate_log(&v, tmp.path());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut by_kind = BTreeMap::new();
    for r in records {
        by_kind
            .entry(r["kind"].as_str().unwrap().to_string())
            .or_insert(r);
    }
    by_kind
}

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    v.as_object_mut().unwrap()
}

#[test]
fn schema_rejects_bad_records() {
    let v = validator();
    let samples = sample_records();
    let tool = samples["tool_call"].clone();
    let checkpoint = samples["checkpoint"].clone();
    let llm = samples["llm_call"].clone();
    assert!(v.is_valid(&tool) && v.is_valid(&checkpoint) && v.is_valid(&llm));

    type Mutation = (&'static str, Value, fn(&mut Value));
    let cases: Vec<Mutation> = vec![
        // Wrong types.
        ("duration_ms as a string", tool.clone(), |r| {
            obj(r).insert("duration_ms".into(), json!("84ms"));
        }),
        ("seq as a small decimal string", tool.clone(), |r| {
            obj(r).insert("seq".into(), json!("12"));
        }),
        ("negative seq", tool.clone(), |r| {
            obj(r).insert("seq".into(), json!(-1));
        }),
        ("tool as a string", tool.clone(), |r| {
            obj(r).insert("tool".into(), json!("db.query"));
        }),
        ("input_tokens as a float", llm.clone(), |r| {
            obj(r).insert("input_tokens".into(), json!(12.5));
        }),
        ("v is 2", tool.clone(), |r| {
            obj(r).insert("v".into(), json!(2));
        }),
        ("risk score above 100", tool.clone(), |r| {
            r["risk"]["score"] = json!(101);
        }),
        ("args_redacted as a string", tool.clone(), |r| {
            obj(r).insert("args_redacted".into(), json!("yes"));
        }),
        // Bad enums.
        ("result_status not in the enum", tool.clone(), |r| {
            obj(r).insert("result_status".into(), json!("okay"));
        }),
        ("unknown kind", tool.clone(), |r| {
            obj(r).insert("kind".into(), json!("tool_invocation"));
        }),
        ("capture not in the enum", tool.clone(), |r| {
            obj(r).insert("capture".into(), json!("full"));
        }),
        // Missing required fields.
        ("no hash", tool.clone(), |r| {
            obj(r).remove("hash");
        }),
        ("no tool", tool.clone(), |r| {
            obj(r).remove("tool");
        }),
        ("no tool name", tool.clone(), |r| {
            obj(&mut r["tool"]).remove("name");
        }),
        ("no retention_class", tool.clone(), |r| {
            obj(r).remove("retention_class");
        }),
        ("no model", llm.clone(), |r| {
            obj(r).remove("model");
        }),
        ("span_id without trace_id", tool.clone(), |r| {
            obj(r).remove("trace_id");
        }),
        ("checkpoint without sig", checkpoint.clone(), |r| {
            obj(r).remove("sig");
        }),
        ("payload without payload_digest", tool.clone(), |r| {
            obj(r).remove("payload_digest");
        }),
        // Unknown fields.
        ("unknown top-level field", tool.clone(), |r| {
            obj(r).insert("step_name".into(), json!("lookup"));
        }),
        ("another kind's field", tool.clone(), |r| {
            obj(r).insert("input_tokens".into(), json!(3));
        }),
        ("trace fields on a writer record", checkpoint.clone(), |r| {
            obj(r).insert("trace_id".into(), json!("4bf92f3577b34da6a3ce929d0e0e4736"));
        }),
        ("unknown principal field", tool.clone(), |r| {
            r["principal"]["email"] = json!("jane@example.com");
        }),
        ("unknown tool field", tool.clone(), |r| {
            r["tool"]["owner"] = json!("acme");
        }),
        ("unknown payload part", tool.clone(), |r| {
            r["payload"]["data"]["stdin"] = json!("x");
        }),
        // Bad hash, id and time formats.
        ("uppercase hash", tool.clone(), |r| {
            let h = r["hash"]
                .as_str()
                .unwrap()
                .to_uppercase()
                .replace("SHA256", "sha256");
            obj(r).insert("hash".into(), json!(h));
        }),
        ("short hash", tool.clone(), |r| {
            obj(r).insert("hash".into(), json!("sha256:abcd"));
        }),
        ("prev without prefix", tool.clone(), |r| {
            let p = r["prev"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string();
            obj(r).insert("prev".into(), json!(p));
        }),
        ("args_hash with another algorithm", tool.clone(), |r| {
            obj(r).insert("args_hash".into(), json!(format!("md5:{}", "0".repeat(64))));
        }),
        ("signature too short", tool.clone(), |r| {
            obj(r).insert("sig".into(), json!("ed25519:0123456789abcdef:00"));
        }),
        ("trace_id of 31 hex digits", tool.clone(), |r| {
            obj(r).insert("trace_id".into(), json!("4bf92f3577b34da6a3ce929d0e0e473"));
        }),
        ("all-zero span_id", tool.clone(), |r| {
            obj(r).insert("span_id".into(), json!("0000000000000000"));
        }),
        ("ts without milliseconds", tool.clone(), |r| {
            obj(r).insert("ts".into(), json!("2026-04-16T13:44:37Z"));
        }),
        ("ts with an offset", tool.clone(), |r| {
            obj(r).insert("ts".into(), json!("2026-04-16T13:44:37.123+02:00"));
        }),
        ("event_id not a UUID", tool.clone(), |r| {
            obj(r).insert("event_id".into(), json!("evt_123"));
        }),
        ("salt too short", tool.clone(), |r| {
            r["payload"]["salt"] = json!("00ff");
        }),
        ("erasure marker with data", tool.clone(), |r| {
            r["payload"]["erased"] = json!(true);
        }),
    ];
    let mut accepted = Vec::new();
    for (name, mut record, mutate) in cases {
        mutate(&mut record);
        let errs = errors_of(&v, &record);
        if errs.is_empty() {
            accepted.push(name);
        } else {
            println!("{name}: rejected: {}", errs.join("; "));
        }
    }
    assert!(
        accepted.is_empty(),
        "the schema accepted bad records: {accepted:?}"
    );
}

#[test]
fn schema_is_valid_draft_2020_12_and_matches_the_code() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    if let Err(e) = jsonschema::draft202012::meta::validate(&s) {
        panic!(
            "not a valid draft 2020-12 schema: {e} at {}",
            e.instance_path().as_str()
        );
    }
    // Compiles, with every $ref resolved.
    validator();

    let kinds: Vec<&str> = s["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let code_kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds, code_kinds);
    for k in Kind::ALL {
        assert!(
            s["$defs"][format!("kind_{k}")].is_object(),
            "no $defs entry for {k}"
        );
    }
    let parts: Vec<&str> =
        s["$defs"]["payload_stored"]["properties"]["data"]["propertyNames"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
    let code_parts: Vec<&str> = PayloadPart::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(parts, code_parts);
    for p in PayloadPart::ALL {
        assert!(
            s["$defs"]["submitted"]["properties"][p.hash_field()].is_object(),
            "no {} in the schema",
            p.hash_field()
        );
    }
    let statuses = &s["$defs"]["result_status"]["enum"];
    for st in [
        ResultStatus::Ok,
        ResultStatus::Error,
        ResultStatus::Timeout,
        ResultStatus::Blocked,
        ResultStatus::Cancelled,
    ] {
        let name = serde_json::to_value(st).unwrap();
        assert!(statuses.as_array().unwrap().contains(&name));
    }
}

/// The writer serializes bodies straight to canonical text; each field
/// must be exactly what canonicalizing `serde_json::to_value` gives.
#[test]
fn bodies_serialize_as_canonicalizing_their_value_would() {
    use agent_audit::envelope::Envelope;
    let mut bodies: Vec<Body> = support_task("alice@example.com")
        .into_iter()
        .map(|e| e.body)
        .collect();
    bodies.push(Body::ToolCall(ToolCall {
        data_subjects_affected: Some(Counter(u64::MAX)),
        ..Default::default()
    }));
    let mut kinds = BTreeSet::new();
    for body in &bodies {
        kinds.insert(body.kind());
        let Value::Object(map) = serde_json::to_value(body).unwrap() else {
            panic!("body is not an object")
        };
        let mut env = Envelope::new();
        env.extend_object(body).unwrap();
        assert_eq!(env.len(), map.len(), "{body:?}");
        for (k, v) in &map {
            let want = agent_audit::jcs::canonicalize(v).unwrap();
            assert_eq!(
                env.get_raw(k).map(String::from_utf8_lossy),
                Some(String::from_utf8_lossy(&want)),
                "field {k} of {body:?}"
            );
        }
    }
    assert!(kinds.len() >= 10, "{kinds:?}");
}
