//! Shipping over OTLP/HTTP (protobuf) to a local receiver that decodes
//! every request with the official `opentelemetry-proto` definitions
//! (the exporter's own message structs are written by hand, so this is an
//! independent check) and checks every log record and every span against
//! the records in the local log.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_audit::keys::PublicKey;
use agent_audit::record::{
    AgentSpawn, Counter, Decision, Guardrail, GuardrailVerdict, HumanReview, LlmCall, MemoryOp,
    ModelInfo, OtelContext, Outcome, ResultStatus, Retrieval, ToolCall, ToolInfo, TraceEnd,
    TraceStart,
};
use agent_audit::verify::{StreamStatus, VerifyOptions, verify_log};
use agent_audit::{
    AuditLog, Body, Event, PayloadPart, Principal, Risk, SpanId, Timestamp, TraceId,
};
use agent_audit_ship::tail::TailLimits;
use agent_audit_ship::{
    Exporter, OtlpConfig, OtlpExporter, Outgoing, ShipOptions, ShipStats, ship,
};
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::{Map, Value, json};

// ---- the receiver ---------------------------------------------------------

/// A tiny OTLP/HTTP receiver: HTTP/1.1 with keep-alive, `POST /v1/logs`
/// and `POST /v1/traces` with protobuf bodies. It can be told to answer
/// the next N requests of a signal with an error status.
struct Receiver {
    port: u16,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Accepted (2xx) requests, decoded, in arrival order.
    logs: Mutex<Vec<ExportLogsServiceRequest>>,
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    /// Answer this many of the next logs / traces requests with 503 / 429.
    fail_logs: AtomicUsize,
    fail_traces: AtomicUsize,
    /// Answer this many of the next accepted logs requests with a
    /// partial_success rejecting 2 log records.
    partial_logs: AtomicUsize,
    /// Requests answered with an error.
    refused: AtomicUsize,
    /// Anything the receiver found wrong with a request.
    problems: Mutex<Vec<String>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let s = state.clone();
        // The threads end with the test process.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Receiver { port, state }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_records(&self) -> Vec<LogRecord> {
        let reqs = self.state.logs.lock().unwrap();
        let mut out = Vec::new();
        for r in reqs.iter() {
            assert_eq!(r.resource_logs.len(), 1);
            let rl = &r.resource_logs[0];
            let res = rl.resource.as_ref().unwrap();
            assert_eq!(
                attr(&res.attributes, "service.name"),
                Some(&Any::StringValue("agent-audit".into()))
            );
            for sl in &rl.scope_logs {
                assert_eq!(sl.scope.as_ref().unwrap().name, "agent-audit");
                out.extend(sl.log_records.iter().cloned());
            }
        }
        out
    }

    fn spans(&self) -> Vec<Span> {
        let reqs = self.state.traces.lock().unwrap();
        let mut out = Vec::new();
        for r in reqs.iter() {
            for rs in &r.resource_spans {
                let res = rs.resource.as_ref().unwrap();
                assert_eq!(
                    attr(&res.attributes, "service.name"),
                    Some(&Any::StringValue("agent-audit".into()))
                );
                for ss in &rs.scope_spans {
                    assert_eq!(ss.scope.as_ref().unwrap().name, "agent-audit");
                    out.extend(ss.spans.iter().cloned());
                }
            }
        }
        out
    }

    fn problems(&self) -> Vec<String> {
        self.state.problems.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, state: &State) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let Some(len) = headers
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        else {
            state
                .problems
                .lock()
                .unwrap()
                .push(format!("{method} {path} without Content-Length"));
            return;
        };
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if method != "POST"
            || headers.get("content-type").map(String::as_str) != Some("application/x-protobuf")
        {
            state
                .problems
                .lock()
                .unwrap()
                .push(format!("{method} {path} {headers:?}"));
        }
        let take = |n: &AtomicUsize| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| x.checked_sub(1))
                .is_ok()
        };
        let status = match path {
            "/v1/logs" if take(&state.fail_logs) => "503 Service Unavailable",
            "/v1/traces" if take(&state.fail_traces) => "429 Too Many Requests",
            "/v1/logs" => match ExportLogsServiceRequest::decode(body.as_slice()) {
                Ok(r) => {
                    state.logs.lock().unwrap().push(r);
                    "200 OK"
                }
                Err(e) => {
                    state.problems.lock().unwrap().push(format!("logs: {e}"));
                    "400 Bad Request"
                }
            },
            "/v1/traces" => match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(r) => {
                    state.traces.lock().unwrap().push(r);
                    "200 OK"
                }
                Err(e) => {
                    state.problems.lock().unwrap().push(format!("traces: {e}"));
                    "400 Bad Request"
                }
            },
            _ => "404 Not Found",
        };
        if !status.starts_with("200") {
            state.refused.fetch_add(1, Ordering::SeqCst);
        }
        // An empty protobuf body is an Export*ServiceResponse without
        // partial_success: everything accepted. Told to, the receiver
        // rejects 2 log records for good.
        let reply = if path == "/v1/logs" && status.starts_with("200") && take(&state.partial_logs)
        {
            ExportLogsServiceResponse {
                partial_success: Some(ExportLogsPartialSuccess {
                    rejected_log_records: 2,
                    error_message: "over quota".into(),
                }),
            }
            .encode_to_vec()
        } else {
            Vec::new()
        };
        let mut answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        )
        .into_bytes();
        answer.extend_from_slice(&reply);
        if out.write_all(&answer).is_err() {
            return;
        }
    }
}

// ---- helpers --------------------------------------------------------------

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    let found: Vec<&KeyValue> = attrs.iter().filter(|kv| kv.key == key).collect();
    assert!(
        found.len() <= 1,
        "attribute {key} given {} times",
        found.len()
    );
    found
        .first()
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn s(v: &str) -> Option<Any> {
    Some(Any::StringValue(v.into()))
}

fn int(v: i64) -> Option<Any> {
    Some(Any::IntValue(v))
}

fn strings(v: Option<&Any>) -> Vec<String> {
    match v {
        Some(Any::ArrayValue(a)) => a
            .values
            .iter()
            .map(|x| match &x.value {
                Some(Any::StringValue(s)) => s.clone(),
                other => panic!("not a string: {other:?}"),
            })
            .collect(),
        other => panic!("not an array: {other:?}"),
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ts_nanos(rec: &Map<String, Value>) -> u64 {
    Timestamp::parse_rfc3339(rec["ts"].as_str().unwrap())
        .unwrap()
        .0 as u64
}

fn ship_opts(until_idle: Duration, max_records: usize) -> ShipOptions {
    ShipOptions {
        poll: Duration::from_millis(20),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        until_idle: Some(until_idle),
        report_errors: false,
        limits: TailLimits {
            max_records,
            ..TailLimits::default()
        },
    }
}

fn ship_to(log: &Path, rx: &Receiver, opts: &ShipOptions) -> ShipStats {
    let mut cfg = OtlpConfig::new(rx.endpoint());
    cfg.timeout = Duration::from_secs(5);
    let mut exporter = OtlpExporter::new(cfg).unwrap();
    let stats = ship(log, &mut exporter, opts, &AtomicBool::new(false)).unwrap();
    assert_eq!(exporter.rejections().log_records, 0);
    stats
}

/// Stream directories of a log, by stream id.
fn streams(log: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_string(), p))
        .collect();
    out.sort();
    out
}

/// Every record line of a log, with its parsed record: (stream, line, record).
fn all_records(log: &Path) -> Vec<(String, String, Map<String, Value>)> {
    let mut out = Vec::new();
    for (id, dir) in streams(log) {
        for line in stream_lines(&dir) {
            let text = String::from_utf8(line).unwrap();
            let rec: Map<String, Value> = serde_json::from_str(&text).unwrap();
            out.push((id.clone(), text, rec));
        }
    }
    out
}

fn log_key(l: &LogRecord) -> String {
    match attr(&l.attributes, "agent_audit.msg_id") {
        Some(Any::StringValue(k)) => k.clone(),
        other => panic!("log record without msg_id: {other:?}"),
    }
}

/// First occurrences by msg_id, in arrival order, and the number of
/// duplicates dropped.
fn dedup(logs: Vec<LogRecord>) -> (Vec<LogRecord>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut dups = 0;
    for l in logs {
        if seen.insert(log_key(&l)) {
            out.push(l);
        } else {
            dups += 1;
        }
    }
    (out, dups)
}

/// Per stream, the seqs in the order their log records first arrived.
fn seqs_by_stream(logs: &[LogRecord]) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for l in logs {
        let (Some(Any::StringValue(stream)), Some(Any::IntValue(seq))) = (
            attr(&l.attributes, "agent_audit.stream_id"),
            attr(&l.attributes, "agent_audit.seq"),
        ) else {
            panic!("log record without stream id or seq: {:?}", l.attributes);
        };
        out.entry(stream.clone()).or_default().push(*seq as u64);
    }
    out
}

// ---- a realistic agent task -------------------------------------------------

struct Task<'a> {
    log: &'a AuditLog,
    trace: TraceId,
    principal: Arc<Principal>,
    t0: i64,
}

impl Task<'_> {
    fn emit(&self, span: SpanId, parent: Option<SpanId>, at_ms: i64, body: Body) -> Event {
        let mut e = Event::new(body).in_trace(self.trace, span, parent);
        e.ts = Timestamp(self.t0 + at_ms * 1_000_000);
        e.principal = Some(self.principal.clone());
        e
    }

    fn send(&self, e: Event) {
        assert!(self.log.emit(e).unwrap());
    }
}

fn outcome(status: ResultStatus, ms: f64, error_type: Option<&str>) -> Outcome {
    Outcome {
        result_status: Some(status),
        duration_ms: Some(ms),
        error_type: error_type.map(str::to_string),
    }
}

fn tool(name: &str, status: ResultStatus, ms: f64, error_type: Option<&str>) -> Body {
    Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: name.into(),
            version: Some("2.3.1".into()),
            ..Default::default()
        },
        outcome: outcome(status, ms, error_type),
        ..Default::default()
    })
}

fn llm(input: u64, output: u64, ms: f64, finish: &str) -> Body {
    Body::LlmCall(LlmCall {
        model: ModelInfo {
            name: "claude-opus".into(),
            version: Some("claude-opus-4-20260301".into()),
            provider: Some("anthropic".into()),
        },
        outcome: outcome(ResultStatus::Ok, ms, None),
        input_tokens: Some(Counter(input)),
        output_tokens: Some(Counter(output)),
        cost_usd: Some(0.009),
        params: json!({"temperature": 0.2, "top_p": 0.9, "max_tokens": 1024})
            .as_object()
            .cloned(),
        finish_reason: Some(finish.into()),
        ..Default::default()
    })
}

/// Span ids of the first task, by role.
struct Spans {
    trace: TraceId,
    root: SpanId,
    llm: SpanId,
    failed_tool: SpanId,
    linked_tool: SpanId,
    spawn: SpanId,
    child_llm: SpanId,
    child_tool: SpanId,
    review: SpanId,
    otel: OtelContext,
}

/// A support task: model calls with token usage, a tool that fails and
/// is retried (with the host's OTel context), a retrieval, a sub-agent
/// with its own model call and tool call nested under the spawn span, a
/// human approval, a memory write, a guardrail verdict. Then a second
/// task that times out.
fn write_tasks(log: &AuditLog) -> Spans {
    let t0 = Timestamp::now().0 - 60_000_000_000;
    let principal = Arc::new(Principal {
        user_id: Some("u_abc".into()),
        session_id: Some("sess_81f2".into()),
        ..Default::default()
    });
    let task = Task {
        log,
        trace: TraceId::random(),
        principal: principal.clone(),
        t0,
    };
    let ids = Spans {
        trace: task.trace,
        root: SpanId::random(),
        llm: SpanId::random(),
        failed_tool: SpanId::random(),
        linked_tool: SpanId::random(),
        spawn: SpanId::random(),
        child_llm: SpanId::random(),
        child_tool: SpanId::random(),
        review: SpanId::random(),
        otel: OtelContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
        },
    };
    let root = Some(ids.root);
    task.send(
        task.emit(
            ids.root,
            None,
            0,
            Body::TraceStart(TraceStart {
                task_kind: "customer_support_resolution".into(),
                ..Default::default()
            }),
        )
        .with_part(
            PayloadPart::Input,
            json!({"ticket": "T-1", "body": "refund please"}),
        ),
    );
    task.send(task.emit(
        SpanId::random(),
        root,
        1,
        Body::Guardrail(Guardrail {
            guardrails: vec![GuardrailVerdict {
                id: "prompt_guard".into(),
                verdict: "BENIGN".into(),
                score: Some(0.99),
                ..Default::default()
            }],
            target: Some("input".into()),
            action: Some("allow".into()),
        }),
    ));
    task.send(
        task.emit(ids.llm, root, 2, llm(1420, 312, 840.0, "tool_use"))
            .with_part(
                PayloadPart::Messages,
                json!([{"role": "user", "content": "refund"}]),
            ),
    );
    task.send(task.emit(
        SpanId::random(),
        root,
        843,
        Body::Decision(Decision {
            decision: "call_tools".into(),
            tools: vec!["billing.lookup".into()],
            confidence: Some(0.9),
        }),
    ));
    task.send(
        task.emit(
            ids.failed_tool,
            root,
            844,
            tool(
                "billing.lookup",
                ResultStatus::Error,
                5003.0,
                Some("TimeoutError"),
            ),
        )
        .with_part(PayloadPart::Args, json!({"days": 30}))
        .with_part(PayloadPart::Error, json!({"message": "upstream timed out"})),
    );
    let mut retried = task.emit(
        ids.linked_tool,
        root,
        5850,
        tool("billing.lookup", ResultStatus::Ok, 84.5, None),
    );
    retried.otel = Some(ids.otel.clone());
    task.send(retried.with_part(PayloadPart::Result, json!({"charges": 2})));
    task.send(task.emit(
        SpanId::random(),
        root,
        5940,
        Body::Retrieval(Retrieval {
            source: Some("kb".into()),
            outcome: outcome(ResultStatus::Ok, 31.0, None),
            ..Default::default()
        }),
    ));
    // The child's steps are written before the spawn record (it is
    // written when the child returns): order of records is not order of
    // spans.
    task.send(task.emit(
        ids.child_llm,
        Some(ids.spawn),
        6001,
        llm(610, 190, 420.0, "end_turn"),
    ));
    task.send(task.emit(
        ids.child_tool,
        Some(ids.spawn),
        6422,
        tool("kb.search", ResultStatus::Ok, 4.0, None),
    ));
    task.send(task.emit(
        ids.spawn,
        root,
        6000,
        Body::AgentSpawn(AgentSpawn {
            child_agent_id: "reply-drafter-v1".into(),
            outcome: outcome(ResultStatus::Ok, 430.0, None),
            task_kind: Some("draft_reply".into()),
        }),
    ));
    task.send(task.emit(
        ids.review,
        root,
        6660,
        Body::HumanReview(HumanReview {
            decision: "approved".into(),
            reviewer: Some("operator-jane".into()),
            wait_ms: Some(1240.0),
            ..Default::default()
        }),
    ));
    let mut email = task.emit(
        SpanId::random(),
        root,
        7901,
        tool("email.send", ResultStatus::Ok, 210.0, None),
    );
    email.risk = Risk {
        flags: vec!["sends_external_message".into()],
        score: 30,
    };
    task.send(email);
    task.send(task.emit(
        SpanId::random(),
        root,
        8112,
        Body::Memory(MemoryOp {
            operation: "write".into(),
            store: Some("customer_notes".into()),
            key: Some("T-1".into()),
        }),
    ));
    task.send(task.emit(
        ids.root,
        None,
        8120,
        Body::TraceEnd(TraceEnd {
            outcome: "completed".into(),
            duration_ms: Some(8120.0),
            error_type: None,
        }),
    ));

    // A second task that times out.
    let failed = Task {
        log,
        trace: TraceId::random(),
        principal,
        t0: t0 + 10_000_000_000,
    };
    let r2 = SpanId::random();
    failed.send(failed.emit(
        r2,
        None,
        0,
        Body::TraceStart(TraceStart {
            task_kind: "nightly_report".into(),
            ..Default::default()
        }),
    ));
    failed.send(failed.emit(
        SpanId::random(),
        Some(r2),
        5,
        tool("warehouse.query", ResultStatus::Timeout, 30_000.0, None),
    ));
    failed.send(failed.emit(
        r2,
        None,
        30_010,
        Body::TraceEnd(TraceEnd {
            outcome: "failed".into(),
            duration_ms: Some(30_010.0),
            error_type: Some("TimeoutError".into()),
        }),
    ));
    ids
}

// ---- what every log record and span must be ---------------------------------

/// Checks one log record against its record line.
fn check_log(l: &LogRecord, stream: &str, line: &str, rec: &Map<String, Value>) {
    let seq = rec["seq"].as_u64().unwrap();
    assert_eq!(
        l.body.as_ref().and_then(|b| b.value.clone()),
        s(line),
        "body of {stream}:{seq}"
    );
    let a = &l.attributes;
    assert_eq!(
        attr(a, "agent_audit.msg_id"),
        s(&format!("{stream}:{seq}")).as_ref()
    );
    assert_eq!(attr(a, "agent_audit.stream_id"), s(stream).as_ref());
    assert_eq!(attr(a, "agent_audit.seq"), int(seq as i64).as_ref());
    let kind = rec["kind"].as_str().unwrap();
    assert_eq!(attr(a, "agent_audit.kind"), s(kind).as_ref());
    assert_eq!(l.event_name, format!("agent_audit.{kind}"));
    assert_eq!(
        attr(a, "agent_audit.event_id"),
        s(rec["event_id"].as_str().unwrap()).as_ref()
    );
    assert_eq!(
        attr(a, "agent_audit.hash"),
        s(rec["hash"].as_str().unwrap()).as_ref()
    );
    let principal = rec.get("principal").and_then(Value::as_object);
    let p = |k: &str| principal.and_then(|p| p.get(k)).and_then(Value::as_str);
    assert_eq!(
        attr(a, "agent_audit.tenant_id"),
        p("tenant_id").and_then(s).as_ref()
    );
    assert_eq!(
        attr(a, "agent_audit.agent_id"),
        p("agent_id").and_then(s).as_ref()
    );
    assert_eq!(
        attr(a, "agent_audit.retention_class"),
        rec.get("retention_class")
            .and_then(Value::as_str)
            .and_then(s)
            .as_ref()
    );
    assert_eq!(l.time_unix_nano, ts_nanos(rec));
    assert!(l.observed_time_unix_nano >= l.time_unix_nano);
    match rec.get("trace_id").and_then(Value::as_str) {
        Some(t) => {
            assert_eq!(l.trace_id, hex_bytes(t));
            assert_eq!(l.trace_id.len(), 16);
            assert_eq!(
                l.span_id,
                hex_bytes(rec["span_id"].as_str().unwrap()),
                "log span id"
            );
            assert_eq!(l.span_id.len(), 8);
            assert_eq!(l.flags, 1);
        }
        None => {
            assert!(l.trace_id.is_empty() && l.span_id.is_empty());
        }
    }
    let failed = matches!(
        rec.get("result_status").and_then(Value::as_str),
        Some("error" | "timeout" | "blocked")
    ) || (kind == "trace_end" && rec["outcome"] != "completed");
    let expect_severity = if failed { 17 } else { 9 };
    assert_eq!(l.severity_number, expect_severity, "{kind} severity");
    match kind {
        "checkpoint" => {
            assert_eq!(
                attr(a, "agent_audit.checkpoint.tree_size"),
                int(rec["tree_size"].as_i64().unwrap()).as_ref()
            );
            assert_eq!(
                attr(a, "agent_audit.checkpoint.root"),
                s(rec["root"].as_str().unwrap()).as_ref()
            );
        }
        "llm_call" => assert_eq!(attr(a, "gen_ai.operation.name"), s("chat").as_ref()),
        "tool_call" => assert_eq!(attr(a, "gen_ai.operation.name"), s("execute_tool").as_ref()),
        _ => {}
    }
}

/// The span name and GenAI operation a record must give.
fn expected_name(rec: &Map<String, Value>) -> (String, Option<&'static str>, SpanKind) {
    let f = |k: &str| rec.get(k).and_then(Value::as_str).unwrap_or_default();
    let kind = f("kind");
    let internal = SpanKind::Internal;
    match kind {
        "llm_call" => (
            format!("chat {}", rec["model"]["name"].as_str().unwrap()),
            Some("chat"),
            SpanKind::Client,
        ),
        "tool_call" => (
            format!("execute_tool {}", rec["tool"]["name"].as_str().unwrap()),
            Some("execute_tool"),
            internal,
        ),
        "agent_spawn" => (
            format!("invoke_agent {}", f("child_agent_id")),
            Some("invoke_agent"),
            internal,
        ),
        "trace_end" => (
            format!(
                "invoke_agent {}",
                rec["principal"]["agent_id"].as_str().unwrap()
            ),
            Some("invoke_agent"),
            internal,
        ),
        "retrieval" => (
            format!("retrieval {}", f("source")),
            Some("retrieval"),
            internal,
        ),
        "decision" => (format!("decision {}", f("decision")), None, internal),
        "memory" => (format!("memory {}", f("operation")), None, internal),
        "guardrail" => (format!("guardrail {}", f("action")), None, internal),
        "human_review" => (format!("human_review {}", f("decision")), None, internal),
        "policy" => (format!("policy {}", f("rule_id")), None, internal),
        other => panic!("no span expected for {other}"),
    }
}

/// Checks one span against its record.
fn check_span(sp: &Span, rec: &Map<String, Value>) {
    let kind = rec["kind"].as_str().unwrap();
    let what = format!("{kind} {}", rec["span_id"]);
    assert_eq!(
        sp.trace_id,
        hex_bytes(rec["trace_id"].as_str().unwrap()),
        "{what}"
    );
    assert_eq!(
        sp.span_id,
        hex_bytes(rec["span_id"].as_str().unwrap()),
        "{what}"
    );
    assert_eq!(
        sp.parent_span_id,
        rec.get("parent_span_id")
            .and_then(Value::as_str)
            .map(hex_bytes)
            .unwrap_or_default(),
        "{what} parent"
    );
    let (name, op, span_kind) = expected_name(rec);
    assert_eq!(sp.name, name, "{what}");
    assert_eq!(sp.kind, span_kind as i32, "{what}");
    let a = &sp.attributes;
    assert_eq!(
        attr(a, "gen_ai.operation.name"),
        op.and_then(s).as_ref(),
        "{what}"
    );
    assert_eq!(attr(a, "agent_audit.kind"), s(kind).as_ref());
    assert_eq!(
        attr(a, "agent_audit.event_id"),
        s(rec["event_id"].as_str().unwrap()).as_ref()
    );
    assert_eq!(
        attr(a, "agent_audit.msg_id"),
        s(&format!(
            "{}:{}",
            rec["stream_id"].as_str().unwrap(),
            rec["seq"]
        ))
        .as_ref()
    );
    assert_eq!(
        attr(a, "gen_ai.conversation.id"),
        s(rec["principal"]["session_id"].as_str().unwrap()).as_ref()
    );
    // Times: a step starts at ts and lasts duration_ms (a review wait_ms);
    // the task's root span ends at trace_end's ts.
    let ts = ts_nanos(rec);
    let ms = |k: &str| {
        rec.get(k)
            .and_then(Value::as_f64)
            .map_or(0, |x| (x * 1e6).round() as u64)
    };
    let (start, end) = match kind {
        "trace_end" => (ts - ms("duration_ms"), ts),
        "human_review" => (ts, ts + ms("wait_ms")),
        _ => (ts, ts + ms("duration_ms")),
    };
    assert_eq!(
        (sp.start_time_unix_nano, sp.end_time_unix_nano),
        (start, end),
        "{what}"
    );
    // Status: error for a failed step or task, unset otherwise.
    let failed = match kind {
        "trace_end" => rec["outcome"] != "completed",
        _ => matches!(
            rec.get("result_status").and_then(Value::as_str),
            Some("error" | "timeout" | "blocked")
        ),
    };
    let status = sp.status.clone().unwrap_or_default();
    if failed {
        assert_eq!(status.code, StatusCode::Error as i32, "{what}");
        let expected_type = rec
            .get("error_type")
            .or_else(|| rec.get("result_status"))
            .or_else(|| rec.get("outcome"))
            .and_then(Value::as_str)
            .unwrap();
        assert_eq!(attr(a, "error.type"), s(expected_type).as_ref(), "{what}");
        assert!(!status.message.is_empty());
    } else {
        assert_eq!(status.code, StatusCode::Unset as i32, "{what}");
        assert_eq!(attr(a, "error.type"), None, "{what}");
    }
    match kind {
        "llm_call" => {
            let model = &rec["model"];
            assert_eq!(
                attr(a, "gen_ai.request.model"),
                s(model["name"].as_str().unwrap()).as_ref()
            );
            assert_eq!(
                attr(a, "gen_ai.response.model"),
                s(model["version"].as_str().unwrap()).as_ref()
            );
            assert_eq!(
                attr(a, "gen_ai.provider.name"),
                s(model["provider"].as_str().unwrap()).as_ref()
            );
            assert_eq!(
                attr(a, "gen_ai.usage.input_tokens"),
                int(rec["input_tokens"].as_i64().unwrap()).as_ref()
            );
            assert_eq!(
                attr(a, "gen_ai.usage.output_tokens"),
                int(rec["output_tokens"].as_i64().unwrap()).as_ref()
            );
            assert_eq!(
                strings(attr(a, "gen_ai.response.finish_reasons")),
                vec![rec["finish_reason"].as_str().unwrap().to_string()]
            );
            assert_eq!(
                attr(a, "gen_ai.request.temperature"),
                Some(&Any::DoubleValue(0.2))
            );
            assert_eq!(
                attr(a, "gen_ai.request.top_p"),
                Some(&Any::DoubleValue(0.9))
            );
            assert_eq!(attr(a, "gen_ai.request.max_tokens"), int(1024).as_ref());
        }
        "tool_call" => {
            assert_eq!(
                attr(a, "gen_ai.tool.name"),
                s(rec["tool"]["name"].as_str().unwrap()).as_ref()
            );
        }
        "agent_spawn" => {
            assert_eq!(
                attr(a, "gen_ai.agent.name"),
                s(rec["child_agent_id"].as_str().unwrap()).as_ref()
            );
        }
        "trace_end" => {
            assert_eq!(
                attr(a, "gen_ai.agent.name"),
                s(rec["principal"]["agent_id"].as_str().unwrap()).as_ref()
            );
        }
        "retrieval" => {
            assert_eq!(
                attr(a, "gen_ai.data_source.id"),
                s(rec["source"].as_str().unwrap()).as_ref()
            );
        }
        _ => {}
    }
    if kind != "agent_spawn" {
        // The agent that made the step (for a spawn: the child).
        assert_eq!(
            attr(a, "gen_ai.agent.name"),
            s(rec["principal"]["agent_id"].as_str().unwrap()).as_ref(),
            "{what}"
        );
    }
    let risk = &rec["risk"];
    assert_eq!(
        attr(a, "agent_audit.risk.score"),
        int(risk["score"].as_i64().unwrap()).as_ref()
    );
    let flags = risk["flags"].as_array().unwrap();
    if flags.is_empty() {
        assert_eq!(attr(a, "agent_audit.risk.flags"), None);
    } else {
        let expected: Vec<String> = flags
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        assert_eq!(strings(attr(a, "agent_audit.risk.flags")), expected);
    }
}

/// The records that must become spans: event records with a span id,
/// except trace_start (its span is trace_end's).
fn span_records(records: &[(String, String, Map<String, Value>)]) -> Vec<&Map<String, Value>> {
    records
        .iter()
        .map(|(_, _, r)| r)
        .filter(|r| {
            r.contains_key("span_id")
                && !matches!(
                    r["kind"].as_str(),
                    Some("trace_start" | "gap" | "checkpoint" | "stream_start" | "stream_end")
                )
        })
        .collect()
}

// ---- tests -----------------------------------------------------------------

#[test]
fn every_record_is_a_log_record_and_the_trace_structure_is_genai_spans() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let (key, public) = key(tmp.path(), "writer");
    let rx = Receiver::start();

    let audit = open_log(&log, &key, "acme", "standard_7y", 1 << 20);
    for i in 0..5 {
        audit.emit(event(i)).unwrap();
    }
    let ids = write_tasks(&audit);
    assert!(audit.flush(Duration::from_secs(5)));
    assert!(audit.shutdown(Duration::from_secs(5)));
    drop(audit);

    let stats = ship_to(&log, &rx, &ship_opts(Duration::from_millis(300), 512));
    let records = all_records(&log);
    assert_eq!(stats.shipped, records.len() as u64);
    assert_eq!(stats.failures, 0);
    assert!(rx.problems().is_empty(), "{:?}", rx.problems());

    // Logs: exactly one per record, in order, each the exact line.
    let logs = rx.log_records();
    assert_eq!(logs.len(), records.len());
    for (l, (stream, line, rec)) in logs.iter().zip(&records) {
        check_log(l, stream, line, rec);
    }
    let kinds: HashSet<&str> = records
        .iter()
        .map(|(_, _, r)| r["kind"].as_str().unwrap())
        .collect();
    for k in [
        "stream_start",
        "checkpoint",
        "stream_end",
        "trace_start",
        "decision",
    ] {
        assert!(kinds.contains(k), "no {k} record in the log");
    }

    // Spans: exactly one per span record, each checked.
    let spans = rx.spans();
    let expected = span_records(&records);
    assert_eq!(spans.len(), expected.len());
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "duplicate span ids");
    for rec in &expected {
        let sp = by_id[&hex_bytes(rec["span_id"].as_str().unwrap())];
        check_span(sp, rec);
    }

    // The first task, by hand.
    let span = |id: SpanId| by_id[&id.0.to_vec()];
    let root = span(ids.root);
    assert_eq!(root.name, "invoke_agent ship-test");
    assert_eq!(root.trace_id, ids.trace.0.to_vec());
    assert!(root.parent_span_id.is_empty());
    assert_eq!(
        attr(&root.attributes, "agent_audit.outcome"),
        s("completed").as_ref()
    );
    let start_rec = &records
        .iter()
        .find(|(_, _, r)| r["kind"] == "trace_start" && r["span_id"] == ids.root.to_string())
        .unwrap()
        .2;
    assert_eq!(root.start_time_unix_nano, ts_nanos(start_rec));
    let llm = span(ids.llm);
    assert_eq!(llm.name, "chat claude-opus");
    assert_eq!(llm.kind, SpanKind::Client as i32);
    assert_eq!(
        attr(&llm.attributes, "gen_ai.usage.input_tokens"),
        int(1420).as_ref()
    );
    assert_eq!(
        attr(&llm.attributes, "gen_ai.usage.output_tokens"),
        int(312).as_ref()
    );
    assert_eq!(
        llm.end_time_unix_nano - llm.start_time_unix_nano,
        840_000_000
    );
    let failed = span(ids.failed_tool);
    assert_eq!(failed.name, "execute_tool billing.lookup");
    assert_eq!(
        failed.status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );
    assert_eq!(
        attr(&failed.attributes, "error.type"),
        s("TimeoutError").as_ref()
    );
    let linked = span(ids.linked_tool);
    assert_eq!(linked.links.len(), 1);
    assert_eq!(linked.links[0].trace_id, hex_bytes(&ids.otel.trace_id));
    assert_eq!(linked.links[0].span_id, hex_bytes(&ids.otel.span_id));
    assert_eq!(
        linked.end_time_unix_nano - linked.start_time_unix_nano,
        84_500_000
    );
    let spawn = span(ids.spawn);
    assert_eq!(spawn.name, "invoke_agent reply-drafter-v1");
    assert_eq!(spawn.parent_span_id, ids.root.0.to_vec());
    for child in [ids.child_llm, ids.child_tool] {
        let c = span(child);
        assert_eq!(c.parent_span_id, ids.spawn.0.to_vec());
        assert!(c.start_time_unix_nano >= spawn.start_time_unix_nano);
        assert!(c.end_time_unix_nano <= spawn.end_time_unix_nano);
    }
    assert_eq!(span(ids.child_tool).name, "execute_tool kb.search");
    let review = span(ids.review);
    assert_eq!(
        review.end_time_unix_nano - review.start_time_unix_nano,
        1_240_000_000
    );
    // Every span of the first task lies within its root span.
    for sp in spans.iter().filter(|s| s.trace_id == ids.trace.0.to_vec()) {
        assert!(
            sp.start_time_unix_nano >= root.start_time_unix_nano,
            "{}",
            sp.name
        );
        assert!(
            sp.end_time_unix_nano <= root.end_time_unix_nano,
            "{}",
            sp.name
        );
    }
    // The failed task: root span in error with the task's error type.
    let failed_root = spans
        .iter()
        .find(|s| s.name == "invoke_agent ship-test" && s.trace_id != ids.trace.0.to_vec())
        .unwrap();
    assert_eq!(
        failed_root.status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );
    assert_eq!(
        attr(&failed_root.attributes, "error.type"),
        s("TimeoutError").as_ref()
    );

    // Downstream can re-verify what arrived: the log bodies, written back
    // as a log (the last checkpoint that arrived as its head.json), verify
    // against the writer's key.
    let received = tmp.path().join("received");
    for (stream, _) in streams(&log) {
        let dir = received.join(&stream);
        fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        let mut head = None;
        for l in &logs {
            if attr(&l.attributes, "agent_audit.stream_id") == s(&stream).as_ref() {
                let Some(Any::StringValue(body)) = l.body.as_ref().and_then(|b| b.value.clone())
                else {
                    panic!("body is not a string")
                };
                if attr(&l.attributes, "agent_audit.kind") == s("checkpoint").as_ref() {
                    head = Some(format!("{body}\n"));
                }
                text.push_str(&body);
                text.push('\n');
            }
        }
        fs::write(dir.join("seg-000000.jsonl"), text).unwrap();
        fs::write(dir.join("head.json"), head.unwrap()).unwrap();
    }
    let report = verify_log(
        &received,
        &VerifyOptions {
            trusted_keys: vec![PublicKey::load(&public).unwrap()],
        },
    )
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.records, records.len() as u64);
    assert_eq!(report.streams.len(), 1);
    assert_eq!(report.streams[0].status, StreamStatus::Clean);
}

#[test]
fn receiver_unavailable_then_back_every_record_arrives_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let (key, _) = key(tmp.path(), "writer");
    let rx = Receiver::start();
    // The first 4 logs requests get 503; after that, the first 3 traces
    // requests get 429 (their batch's logs were already accepted, and are
    // not sent again).
    rx.state.fail_logs.store(4, Ordering::SeqCst);
    rx.state.fail_traces.store(3, Ordering::SeqCst);

    let acme = open_log(&log, &key, "acme", "standard_7y", 16 * 1024);
    let globex = open_log(&log, &key, "globex", "short_90d", 16 * 1024);
    for i in 0..100 {
        acme.emit(event(i)).unwrap();
        globex.emit(event(i)).unwrap();
    }
    let t = write_tasks(&acme);
    assert!(acme.flush(Duration::from_secs(5)) && globex.flush(Duration::from_secs(5)));

    let shipper = {
        let log = log.clone();
        let endpoint = rx.endpoint();
        std::thread::spawn(move || {
            let mut exporter = OtlpExporter::new(OtlpConfig::new(endpoint)).unwrap();
            ship(
                &log,
                &mut exporter,
                &ship_opts(Duration::from_millis(1500), 64),
                &AtomicBool::new(false),
            )
            .unwrap()
        })
    };
    // More records while the receiver refuses.
    for i in 100..250 {
        acme.emit(event(i)).unwrap();
        globex.emit(event(i)).unwrap();
    }
    write_tasks(&globex);
    assert!(acme.shutdown(Duration::from_secs(5)) && globex.shutdown(Duration::from_secs(5)));
    drop((acme, globex));
    let stats = shipper.join().unwrap();

    assert_eq!(rx.state.refused.load(Ordering::SeqCst), 7);
    assert_eq!(stats.failures, 7);
    assert!(rx.problems().is_empty(), "{:?}", rx.problems());
    let records = all_records(&log);
    assert_eq!(stats.shipped, records.len() as u64);

    // At least once; deduplicated by msg_id, exactly the record set, in
    // order within each stream. Nothing here makes a duplicate (refused
    // requests are not kept, and logs accepted before a refused traces
    // request are not re-sent).
    let (logs, dups) = dedup(rx.log_records());
    assert_eq!(dups, 0);
    assert_eq!(logs.len(), records.len());
    let by_key: HashMap<String, &LogRecord> = logs.iter().map(|l| (log_key(l), l)).collect();
    for (stream, line, rec) in &records {
        let k = format!("{stream}:{}", rec["seq"]);
        check_log(by_key[&k], stream, line, rec);
    }
    let seqs = seqs_by_stream(&logs);
    assert_eq!(seqs.len(), 2);
    for (stream, dir) in streams(&log) {
        let n = stream_lines(&dir).len() as u64;
        assert_eq!(seqs[&stream], (0..n).collect::<Vec<_>>(), "{stream}");
    }

    // Spans: every span record exactly once.
    let spans = rx.spans();
    let expected = span_records(&records);
    assert_eq!(spans.len(), expected.len());
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    assert_eq!(by_id.len(), spans.len());
    for rec in &expected {
        check_span(by_id[&hex_bytes(rec["span_id"].as_str().unwrap())], rec);
    }
    assert!(by_id.contains_key(t.root.0.as_slice()));
}

/// A record line with a span, as the exporter sees it (the exporter does
/// not verify; the receiver only needs the ids).
fn step(stream: &str, seq: u64, trace: TraceId) -> Outgoing {
    let rec = json!({
        "kind": "tool_call", "seq": seq, "stream_id": stream,
        "event_id": format!("e{seq}"), "hash": format!("h{seq}"),
        "ts": "2026-12-02T14:18:47.203Z", "trace_id": trace.to_string(),
        "span_id": SpanId::random().to_string(), "tool": {"name": "t"},
        "result_status": "ok", "duration_ms": 1,
        "principal": {"session_id": "s"}, "risk": {"flags": [], "score": 0},
    });
    Outgoing {
        stream_id: stream.into(),
        seq,
        tenant: "_unknown".into(),
        msg_id: format!("{stream}:{seq}"),
        line: serde_json::to_vec(&rec).unwrap(),
    }
}

#[test]
fn logs_accepted_before_a_refused_traces_request_are_not_sent_again() {
    let rx = Receiver::start();
    let mut exporter = OtlpExporter::new(OtlpConfig::new(rx.endpoint())).unwrap();
    let trace = TraceId::random();
    let a: Vec<Outgoing> = (0..10).map(|i| step("a", i, trace)).collect();
    let b: Vec<Outgoing> = (0..3).map(|i| step("b", i, trace)).collect();
    let sent = |rx: &Receiver| -> Vec<String> { rx.log_records().iter().map(log_key).collect() };

    // a:0..9: logs accepted, spans refused.
    rx.state.fail_traces.store(1, Ordering::SeqCst);
    let err = exporter.export(&a).unwrap_err();
    assert_eq!(err.delivered, 0);
    assert!(err.error.to_string().contains("HTTP 429"), "{}", err.error);
    assert_eq!(sent(&rx).len(), 10);
    assert_eq!(rx.spans().len(), 0);
    // Another stream in between.
    exporter.export(&b).unwrap();
    // The retry of a is shorter (a:0..4): only spans go.
    exporter.export(&a[..5]).unwrap();
    assert_eq!(sent(&rx).len(), 13);
    // Then a:5..9 and new records a:10..11: logs only for the new ones.
    let mut rest: Vec<Outgoing> = a[5..].to_vec();
    rest.extend((10..12).map(|i| step("a", i, trace)));
    exporter.export(&rest).unwrap();
    let keys = sent(&rx);
    let expected: Vec<String> = (0..10)
        .map(|i| format!("a:{i}"))
        .chain((0..3).map(|i| format!("b:{i}")))
        .chain((10..12).map(|i| format!("a:{i}")))
        .collect();
    assert_eq!(keys, expected);
    assert_eq!(rx.spans().len(), 10 + 3 + 2);
    // Once acknowledged, a record is sent again if handed over again.
    exporter.export(&a[..1]).unwrap();
    assert_eq!(sent(&rx).len(), 16);

    // A refused logs request delivers nothing.
    rx.state.fail_logs.store(1, Ordering::SeqCst);
    let err = exporter.export(&b).unwrap_err();
    assert_eq!(err.delivered, 0);
    assert!(err.error.to_string().contains("HTTP 503"), "{}", err.error);

    // partial_success: counted, not retried.
    rx.state.partial_logs.store(1, Ordering::SeqCst);
    exporter.export(&b).unwrap();
    let r = exporter.rejections();
    assert_eq!((r.log_records, r.spans), (2, 0));
    assert_eq!(r.last_message.as_deref(), Some("over quota"));
    assert!(rx.problems().is_empty(), "{:?}", rx.problems());
}

#[test]
fn an_unreachable_receiver_is_a_failed_export_not_an_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = OtlpConfig::new(format!("http://127.0.0.1:{port}"));
    cfg.timeout = Duration::from_secs(2);
    let mut exporter = OtlpExporter::new(cfg).unwrap();
    let err = exporter
        .export(&[step("a", 0, TraceId::random())])
        .unwrap_err();
    assert_eq!(err.delivered, 0);
}
