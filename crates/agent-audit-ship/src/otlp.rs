//! OTLP/HTTP (protobuf): every record as an OpenTelemetry log record, and
//! the trace structure as spans with the GenAI semantic conventions.
//!
//! - **Logs** (`POST <endpoint>/v1/logs`): one log record per record line,
//!   checkpoints and the writer's other records included. The body is the
//!   line exactly as it is in the local log (a string; bytes for a line
//!   that is not UTF-8), so anything downstream can re-verify it byte for
//!   byte. Attributes carry the idempotency key `agent_audit.msg_id`
//!   (`<stream_id>:<seq>`), `agent_audit.stream_id`, `agent_audit.seq` and
//!   the key fields (kind, event id, hash, tenant, retention class, risk);
//!   the log record's trace and span ids are the record's.
//! - **Spans** (`POST <endpoint>/v1/traces`): every event record with a
//!   trace id and a span id, except `trace_start`, becomes a span with the
//!   record's own ids: our trace ids are 16 bytes and span ids 8 bytes,
//!   W3C's sizes, so the audit log and the observability trace share
//!   their keys. `llm_call` is `chat {model}` (`gen_ai.operation.name` =
//!   `chat`, provider, request and response model, token usage, finish
//!   reason, temperature / top_p / max_tokens), `tool_call` is
//!   `execute_tool {tool}` (`gen_ai.tool.name`), `agent_spawn` is
//!   `invoke_agent {child}` (`gen_ai.agent.name`), `retrieval` is
//!   `retrieval {source}` (`gen_ai.data_source.id`), and `trace_end` is the
//!   task's root span, `invoke_agent {agent_id}`: it shares its span id
//!   with `trace_start`, and only it knows the task's duration (the span
//!   runs from `ts - duration_ms` to `ts`). Decisions, memory operations,
//!   guardrail verdicts, human reviews and policy verdicts are spans named
//!   after their kind, without a GenAI operation. A step's span starts at
//!   its `ts` and lasts `duration_ms` (a human review: `wait_ms`);
//!   `result_status` `error`, `timeout` or `blocked` (a task `outcome`
//!   other than completed or cancelled) sets the span status to error and
//!   `error.type`. A record's `otel` context (the host application's own
//!   span) becomes a span link.
//!
//! Delivery: the logs request first, then the traces request; the batch is
//! acknowledged when both were answered with HTTP 2xx. Anything else
//! (connection trouble, 429, 502, 503, 504, or any other status) fails the
//! batch and `ship::ship` retries it with back-off. When the logs were
//! accepted and the spans were not, the retry does not send those log
//! records again (the exporter remembers, per stream, how far the logs
//! got until the batch is acknowledged). A `partial_success` answer, in
//! which the receiver says it rejected some items for good, counts as
//! delivered, as the OTLP specification asks (no retry); the rejections
//! are counted in [`OtlpExporter::rejections`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_audit::ids::{SpanId, Timestamp, TraceId};
use prost::Message as _;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::exporter::{ExportFailure, Exporter, Outgoing};

/// Where and how to send OTLP/HTTP.
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// Base URL, `http://HOST:PORT` or `https://HOST:PORT` (optionally
    /// with a path prefix); records go to `<endpoint>/v1/logs`, spans to
    /// `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Extra request headers (authentication, tenancy).
    pub headers: Vec<(String, String)>,
    /// Whether to send spans as well as log records.
    pub spans: bool,
    /// How long one request may take, connecting included.
    pub timeout: Duration,
    /// Exporter name (the cursor file's name).
    pub name: String,
}

impl OtlpConfig {
    /// Defaults for an endpoint.
    pub fn new(endpoint: impl Into<String>) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            service_name: "agent-audit".into(),
            headers: Vec::new(),
            spans: true,
            timeout: Duration::from_secs(10),
            name: "otlp".into(),
        }
    }

    /// The logs URL.
    pub fn logs_url(&self) -> String {
        format!("{}/v1/logs", self.endpoint.trim_end_matches('/'))
    }

    /// The traces URL.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

/// What receivers rejected for good in `partial_success` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Log records rejected.
    pub log_records: u64,
    /// Spans rejected.
    pub spans: u64,
    /// The last error message a receiver gave with a rejection.
    pub last_message: Option<String>,
}

/// Sends records to an OTLP/HTTP receiver (protobuf encoding).
pub struct OtlpExporter {
    cfg: OtlpConfig,
    agent: ureq::Agent,
    logs_url: String,
    traces_url: String,
    // Per stream, the seq below which log records were accepted by an
    // attempt whose spans were not (removed once a batch of that stream
    // is acknowledged): at most one entry per stream in flight.
    logs_done: HashMap<String, u64>,
    rejections: Rejections,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.cfg.endpoint)
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// An exporter for `cfg`. Connects lazily: an absent receiver delays
    /// delivery, it does not fail here.
    pub fn new(cfg: OtlpConfig) -> Result<OtlpExporter> {
        let host = ["http://", "https://"].iter().find_map(|s| {
            let scheme = cfg.endpoint.get(..s.len())?;
            let rest = cfg.endpoint.get(s.len()..)?;
            scheme.eq_ignore_ascii_case(s).then_some(rest)
        });
        if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/')) {
            return Err(Error::new(format!(
                "OTLP endpoint must be http://HOST:PORT or https://HOST:PORT, got {:?}",
                cfg.endpoint
            )));
        }
        for (k, v) in &cfg.headers {
            let bad = k.is_empty()
                || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                || v.bytes().any(|b| b == b'\r' || b == b'\n');
            if bad {
                return Err(Error::new(format!("not a valid HTTP header: {k:?}")));
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout))
            .user_agent(format!("agent-audit/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(OtlpExporter {
            logs_url: cfg.logs_url(),
            traces_url: cfg.traces_url(),
            cfg,
            agent,
            logs_done: HashMap::new(),
            rejections: Rejections::default(),
        })
    }

    /// What receivers rejected for good so far (`partial_success`).
    pub fn rejections(&self) -> &Rejections {
        &self.rejections
    }

    fn post(&self, url: &str, body: &[u8]) -> Result<Vec<u8>> {
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/x-protobuf");
        for (k, v) in &self.cfg.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = req
            .send(body)
            .map_err(|e| Error::with_source(format!("POST {url} failed"), e))?;
        let status = resp.status().as_u16();
        let answer = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        let detail = rpc_status_message(&answer)
            .or_else(|| {
                let text = String::from_utf8_lossy(&answer);
                let text = text.trim();
                (!text.is_empty()).then(|| text.chars().take(200).collect())
            })
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let what = match status {
            429 | 502 | 503 | 504 => "receiver busy or unavailable",
            _ => "receiver refused the request",
        };
        Err(Error::new(format!(
            "{what} (HTTP {status} from {url}){detail}"
        )))
    }
}

impl Exporter for OtlpExporter {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn export(&mut self, records: &[Outgoing]) -> std::result::Result<(), ExportFailure> {
        let fail = |error: Error| ExportFailure {
            delivered: 0,
            error,
        };
        let now = unix_nanos_now();
        let mut log_records = Vec::with_capacity(records.len());
        let mut spans = Vec::new();
        let mut sent_logs: HashMap<&str, u64> = HashMap::new();
        for r in records {
            let parsed = serde_json::from_slice::<Map<String, Value>>(&r.line).ok();
            let already = self
                .logs_done
                .get(&r.stream_id)
                .is_some_and(|next| r.seq < *next);
            if !already {
                log_records.push(log_record(r, parsed.as_ref(), now));
                sent_logs.insert(&r.stream_id, r.seq.saturating_add(1));
            }
            if self.cfg.spans
                && let Some(m) = &parsed
                && let Some(span) = span(r, m)
            {
                spans.push(span);
            }
        }
        let scope = pb::InstrumentationScope {
            name: "agent-audit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let resource = pb::Resource {
            attributes: vec![kv_str("service.name", &self.cfg.service_name)],
        };
        if !log_records.is_empty() {
            let req = pb::ExportLogsServiceRequest {
                resource_logs: vec![pb::ResourceLogs {
                    resource: Some(resource.clone()),
                    scope_logs: vec![pb::ScopeLogs {
                        scope: Some(scope.clone()),
                        log_records,
                    }],
                }],
            };
            let answer = self
                .post(&self.logs_url, &req.encode_to_vec())
                .map_err(fail)?;
            if let Ok(resp) = pb::ExportLogsServiceResponse::decode(answer.as_slice())
                && let Some(p) = resp.partial_success
            {
                self.note_rejection(p.rejected, 0, p.error_message);
            }
            for (stream, next) in sent_logs {
                self.logs_done.insert(stream.to_string(), next);
            }
        }
        if !spans.is_empty() {
            let req = pb::ExportTraceServiceRequest {
                resource_spans: vec![pb::ResourceSpans {
                    resource: Some(resource),
                    scope_spans: vec![pb::ScopeSpans {
                        scope: Some(scope),
                        spans,
                    }],
                }],
            };
            let answer = self
                .post(&self.traces_url, &req.encode_to_vec())
                .map_err(fail)?;
            if let Ok(resp) = pb::ExportTraceServiceResponse::decode(answer.as_slice())
                && let Some(p) = resp.partial_success
            {
                self.note_rejection(0, p.rejected, p.error_message);
            }
        }
        // Acknowledged: the cursor moves past these records. A stream's
        // entry goes once the cursor has passed every log record it
        // covers (a retried batch can be shorter, and the tailer may ship
        // another stream's batch in between).
        for r in records {
            if self
                .logs_done
                .get(&r.stream_id)
                .is_some_and(|next| *next <= r.seq.saturating_add(1))
            {
                self.logs_done.remove(&r.stream_id);
            }
        }
        Ok(())
    }
}

impl OtlpExporter {
    fn note_rejection(&mut self, logs: i64, spans: i64, message: String) {
        let r = &mut self.rejections;
        r.log_records += u64::try_from(logs).unwrap_or(0);
        r.spans += u64::try_from(spans).unwrap_or(0);
        if (logs > 0 || spans > 0) && !message.is_empty() {
            r.last_message = Some(message);
        }
    }
}

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The message of a `google.rpc.Status` error body.
fn rpc_status_message(body: &[u8]) -> Option<String> {
    let s = pb::RpcStatus::decode(body).ok()?;
    (!s.message.is_empty()).then_some(s.message)
}

// ---- records to log records and spans ------------------------------------

const SEVERITY_INFO: i32 = 9;
const SEVERITY_WARN: i32 = 13;
const SEVERITY_ERROR: i32 = 17;
const SPAN_KIND_INTERNAL: i32 = 1;
const SPAN_KIND_CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;
/// W3C trace flags: sampled.
const FLAG_SAMPLED: u32 = 1;

fn str_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn obj_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    m.get(key).and_then(Value::as_object)
}

/// A counter: a JSON number, or a decimal string above 2^53.
fn counter(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)),
        Value::String(s) => s
            .parse::<u64>()
            .ok()
            .map(|u| i64::try_from(u).unwrap_or(i64::MAX)),
        _ => None,
    }
}

fn trace_id(m: &Map<String, Value>) -> Option<TraceId> {
    str_field(m, "trace_id").and_then(|s| TraceId::parse(s).ok())
}

fn span_id(m: &Map<String, Value>, key: &str) -> Option<SpanId> {
    str_field(m, key).and_then(|s| SpanId::parse(s).ok())
}

fn ts_nanos(m: &Map<String, Value>) -> Option<i64> {
    str_field(m, "ts")
        .and_then(|s| Timestamp::parse_rfc3339(s).ok())
        .map(|t| t.0)
}

fn nanos_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn millis_to_nanos(ms: f64) -> i64 {
    if ms.is_finite() && ms > 0.0 {
        // Saturating float-to-int conversion.
        (ms * 1_000_000.0).round() as i64
    } else {
        0
    }
}

fn log_record(r: &Outgoing, m: Option<&Map<String, Value>>, now: u64) -> pb::LogRecord {
    let body = match std::str::from_utf8(&r.line) {
        Ok(s) => pb::any_value::Value::String(s.to_string()),
        Err(_) => pb::any_value::Value::Bytes(r.line.clone()),
    };
    let mut attributes = vec![
        kv_str("agent_audit.msg_id", &r.msg_id),
        kv_str("agent_audit.stream_id", &r.stream_id),
        kv_int("agent_audit.seq", i64::try_from(r.seq).unwrap_or(i64::MAX)),
    ];
    let mut rec = pb::LogRecord {
        observed_time_unix_nano: now,
        severity_number: SEVERITY_INFO,
        severity_text: "INFO".into(),
        body: Some(pb::AnyValue { value: Some(body) }),
        ..Default::default()
    };
    let Some(m) = m else {
        rec.attributes = attributes;
        return rec;
    };
    let kind = str_field(m, "kind").unwrap_or_default();
    if !kind.is_empty() {
        attributes.push(kv_str("agent_audit.kind", kind));
        rec.event_name = format!("agent_audit.{kind}");
    }
    for (key, attr) in [
        ("event_id", "agent_audit.event_id"),
        ("hash", "agent_audit.hash"),
        ("retention_class", "agent_audit.retention_class"),
        ("policy_version", "agent_audit.policy_version"),
        ("result_status", "agent_audit.result_status"),
    ] {
        if let Some(v) = str_field(m, key) {
            attributes.push(kv_str(attr, v));
        }
    }
    if let Some(p) = obj_field(m, "principal") {
        for (key, attr) in [
            ("tenant_id", "agent_audit.tenant_id"),
            ("agent_id", "agent_audit.agent_id"),
            ("session_id", "gen_ai.conversation.id"),
        ] {
            if let Some(v) = str_field(p, key) {
                attributes.push(kv_str(attr, v));
            }
        }
    }
    if let Some(op) = operation_name(kind) {
        attributes.push(kv_str("gen_ai.operation.name", op));
    }
    push_risk(&mut attributes, m);
    match kind {
        "checkpoint" => {
            if let Some(n) = counter(m.get("tree_size")) {
                attributes.push(kv_int("agent_audit.checkpoint.tree_size", n));
            }
            if let Some(root) = str_field(m, "root") {
                attributes.push(kv_str("agent_audit.checkpoint.root", root));
            }
        }
        "gap" => {
            if let Some(n) = counter(m.get("lost")) {
                attributes.push(kv_int("agent_audit.gap.lost", n));
            }
        }
        _ => {}
    }
    let (severity, text) = if kind == "gap" {
        (SEVERITY_WARN, "WARN")
    } else if error_status(m).is_some() {
        (SEVERITY_ERROR, "ERROR")
    } else {
        (SEVERITY_INFO, "INFO")
    };
    rec.severity_number = severity;
    rec.severity_text = text.into();
    rec.time_unix_nano = ts_nanos(m).map_or(0, nanos_u64);
    if let Some(t) = trace_id(m) {
        rec.trace_id = t.0.to_vec();
        rec.flags = FLAG_SAMPLED;
        if let Some(s) = span_id(m, "span_id") {
            rec.span_id = s.0.to_vec();
        }
    }
    rec.attributes = attributes;
    rec
}

/// `gen_ai.operation.name` for kinds the GenAI conventions name.
fn operation_name(kind: &str) -> Option<&'static str> {
    match kind {
        "llm_call" => Some("chat"),
        "tool_call" => Some("execute_tool"),
        "agent_spawn" | "trace_start" | "trace_end" => Some("invoke_agent"),
        "retrieval" => Some("retrieval"),
        _ => None,
    }
}

fn push_risk(attributes: &mut Vec<pb::KeyValue>, m: &Map<String, Value>) {
    if let Some(risk) = obj_field(m, "risk") {
        if let Some(score) = risk.get("score").and_then(Value::as_i64) {
            attributes.push(kv_int("agent_audit.risk.score", score));
        }
        let flags: Vec<&str> = risk
            .get("flags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !flags.is_empty() {
            attributes.push(kv_str_array("agent_audit.risk.flags", &flags));
        }
    }
}

/// `(error.type, status message)` when the step or task did not succeed.
fn error_status(m: &Map<String, Value>) -> Option<(String, String)> {
    let error_type = str_field(m, "error_type");
    if str_field(m, "kind") == Some("trace_end") {
        let outcome = str_field(m, "outcome")?;
        if matches!(outcome, "completed" | "cancelled") {
            return None;
        }
        let t = error_type.unwrap_or(outcome).to_string();
        return Some((t, format!("task {outcome}")));
    }
    let status = str_field(m, "result_status")?;
    if !matches!(status, "error" | "timeout" | "blocked") {
        return None;
    }
    let t = error_type.unwrap_or(status).to_string();
    let msg = match error_type {
        Some(e) => format!("{status}: {e}"),
        None => status.to_string(),
    };
    Some((t, msg))
}

fn span(r: &Outgoing, m: &Map<String, Value>) -> Option<pb::Span> {
    let kind = str_field(m, "kind")?;
    if matches!(
        kind,
        "trace_start" | "gap" | "checkpoint" | "stream_start" | "stream_end"
    ) {
        return None;
    }
    let trace = trace_id(m)?;
    let span = span_id(m, "span_id")?;
    let ts = ts_nanos(m)?;
    let duration_key = if kind == "human_review" {
        "wait_ms"
    } else {
        "duration_ms"
    };
    let duration = millis_to_nanos(m.get(duration_key).and_then(Value::as_f64).unwrap_or(0.0));
    let (start, end) = if kind == "trace_end" {
        (ts.saturating_sub(duration), ts)
    } else {
        (ts, ts.saturating_add(duration))
    };
    let principal = obj_field(m, "principal");
    let agent_id = principal.and_then(|p| str_field(p, "agent_id"));
    let mut attrs = Vec::new();
    if let Some(op) = operation_name(kind) {
        attrs.push(kv_str("gen_ai.operation.name", op));
    }
    let named = |op: &str, what: Option<&str>| match what {
        Some(w) if !w.is_empty() => format!("{op} {w}"),
        _ => op.to_string(),
    };
    let mut span_kind = SPAN_KIND_INTERNAL;
    let name = match kind {
        "llm_call" => {
            span_kind = SPAN_KIND_CLIENT;
            let model = obj_field(m, "model");
            let model_name = model.and_then(|x| str_field(x, "name"));
            if let Some(p) = model.and_then(|x| str_field(x, "provider")) {
                attrs.push(kv_str("gen_ai.provider.name", p));
            }
            if let Some(n) = model_name {
                attrs.push(kv_str("gen_ai.request.model", n));
            }
            if let Some(v) = model.and_then(|x| str_field(x, "version")) {
                attrs.push(kv_str("gen_ai.response.model", v));
            }
            if let Some(n) = counter(m.get("input_tokens")) {
                attrs.push(kv_int("gen_ai.usage.input_tokens", n));
            }
            if let Some(n) = counter(m.get("output_tokens")) {
                attrs.push(kv_int("gen_ai.usage.output_tokens", n));
            }
            if let Some(f) = str_field(m, "finish_reason") {
                attrs.push(kv_str_array("gen_ai.response.finish_reasons", &[f]));
            }
            if let Some(params) = obj_field(m, "params") {
                for (key, attr) in [
                    ("temperature", "gen_ai.request.temperature"),
                    ("top_p", "gen_ai.request.top_p"),
                ] {
                    if let Some(x) = params.get(key).and_then(Value::as_f64) {
                        attrs.push(kv_double(attr, x));
                    }
                }
                if let Some(n) = params.get("max_tokens").and_then(Value::as_i64) {
                    attrs.push(kv_int("gen_ai.request.max_tokens", n));
                }
            }
            if let Some(c) = m.get("cost_usd").and_then(Value::as_f64) {
                attrs.push(kv_double("agent_audit.cost_usd", c));
            }
            named("chat", model_name)
        }
        "tool_call" => {
            let tool = obj_field(m, "tool");
            let tool_name = tool.and_then(|t| str_field(t, "name"));
            if let Some(n) = tool_name {
                attrs.push(kv_str("gen_ai.tool.name", n));
            }
            if let Some(v) = tool.and_then(|t| str_field(t, "version")) {
                attrs.push(kv_str("agent_audit.tool.version", v));
            }
            named("execute_tool", tool_name)
        }
        "agent_spawn" => {
            let child = str_field(m, "child_agent_id");
            if let Some(c) = child {
                attrs.push(kv_str("gen_ai.agent.name", c));
            }
            if let Some(t) = str_field(m, "task_kind") {
                attrs.push(kv_str("agent_audit.task_kind", t));
            }
            named("invoke_agent", child)
        }
        "trace_end" => {
            if let Some(a) = agent_id {
                attrs.push(kv_str("gen_ai.agent.name", a));
            }
            if let Some(o) = str_field(m, "outcome") {
                attrs.push(kv_str("agent_audit.outcome", o));
            }
            named("invoke_agent", agent_id)
        }
        "retrieval" => {
            let source = str_field(m, "source");
            if let Some(s) = source {
                attrs.push(kv_str("gen_ai.data_source.id", s));
            }
            let docs = m
                .get("retrieved_docs")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            attrs.push(kv_int(
                "agent_audit.retrieval.documents",
                i64::try_from(docs).unwrap_or(i64::MAX),
            ));
            named("retrieval", source)
        }
        "decision" => {
            let d = str_field(m, "decision");
            if let Some(d) = d {
                attrs.push(kv_str("agent_audit.decision", d));
            }
            named("decision", d)
        }
        "memory" => {
            let op = str_field(m, "operation");
            if let Some(o) = op {
                attrs.push(kv_str("agent_audit.memory.operation", o));
            }
            if let Some(s) = str_field(m, "store") {
                attrs.push(kv_str("agent_audit.memory.store", s));
            }
            named("memory", op)
        }
        "guardrail" => {
            let action = str_field(m, "action");
            if let Some(a) = action {
                attrs.push(kv_str("agent_audit.guardrail.action", a));
            }
            if let Some(t) = str_field(m, "target") {
                attrs.push(kv_str("agent_audit.guardrail.target", t));
            }
            named("guardrail", action)
        }
        "human_review" => {
            let d = str_field(m, "decision");
            if let Some(d) = d {
                attrs.push(kv_str("agent_audit.review.decision", d));
            }
            if let Some(r) = str_field(m, "reviewer") {
                attrs.push(kv_str("agent_audit.review.reviewer", r));
            }
            named("human_review", d)
        }
        "policy" => {
            let rule = str_field(m, "rule_id");
            if let Some(r) = rule {
                attrs.push(kv_str("agent_audit.policy.rule_id", r));
            }
            if let Some(a) = str_field(m, "action") {
                attrs.push(kv_str("agent_audit.policy.action", a));
            }
            named("policy", rule)
        }
        other => other.to_string(),
    };
    if kind != "trace_end"
        && let Some(a) = agent_id
        && !attrs.iter().any(|kv| kv.key == "gen_ai.agent.name")
    {
        attrs.push(kv_str("gen_ai.agent.name", a));
    }
    if let Some(s) = principal.and_then(|p| str_field(p, "session_id")) {
        attrs.push(kv_str("gen_ai.conversation.id", s));
    }
    if let Some(t) = principal.and_then(|p| str_field(p, "tenant_id")) {
        attrs.push(kv_str("agent_audit.tenant_id", t));
    }
    if let Some(s) = str_field(m, "result_status") {
        attrs.push(kv_str("agent_audit.result_status", s));
    }
    attrs.push(kv_str("agent_audit.kind", kind));
    if let Some(e) = str_field(m, "event_id") {
        attrs.push(kv_str("agent_audit.event_id", e));
    }
    attrs.push(kv_str("agent_audit.msg_id", &r.msg_id));
    push_risk(&mut attrs, m);
    let status = error_status(m).map(|(error_type, message)| {
        attrs.push(kv_str("error.type", &error_type));
        pb::Status {
            message,
            code: STATUS_ERROR,
        }
    });
    let links = obj_field(m, "otel")
        .and_then(|o| {
            let t = TraceId::parse(str_field(o, "trace_id")?).ok()?;
            let s = SpanId::parse(str_field(o, "span_id")?).ok()?;
            Some(pb::Link {
                trace_id: t.0.to_vec(),
                span_id: s.0.to_vec(),
                attributes: vec![kv_str("agent_audit.link", "otel_context")],
            })
        })
        .into_iter()
        .collect();
    Some(pb::Span {
        trace_id: trace.0.to_vec(),
        span_id: span.0.to_vec(),
        parent_span_id: span_id(m, "parent_span_id").map_or_else(Vec::new, |p| p.0.to_vec()),
        flags: FLAG_SAMPLED,
        name,
        kind: span_kind,
        start_time_unix_nano: nanos_u64(start),
        end_time_unix_nano: nanos_u64(end),
        attributes: attrs,
        links,
        status,
    })
}

fn kv(key: &str, value: pb::any_value::Value) -> pb::KeyValue {
    pb::KeyValue {
        key: key.to_string(),
        value: Some(pb::AnyValue { value: Some(value) }),
    }
}

fn kv_str(key: &str, v: &str) -> pb::KeyValue {
    kv(key, pb::any_value::Value::String(v.to_string()))
}

fn kv_int(key: &str, v: i64) -> pb::KeyValue {
    kv(key, pb::any_value::Value::Int(v))
}

fn kv_double(key: &str, v: f64) -> pb::KeyValue {
    kv(key, pb::any_value::Value::Double(v))
}

fn kv_str_array(key: &str, v: &[&str]) -> pb::KeyValue {
    let values = v
        .iter()
        .map(|s| pb::AnyValue {
            value: Some(pb::any_value::Value::String((*s).to_string())),
        })
        .collect();
    kv(key, pb::any_value::Value::Array(pb::ArrayValue { values }))
}

/// The OTLP messages this exporter sends and reads, written by hand with
/// the field numbers of the official `opentelemetry-proto` definitions
/// (v1: collector/logs, collector/trace, logs, trace, common, resource)
/// and only the fields used here. The tests decode what is sent with the
/// official generated types, an independent check of these numbers.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<PartialSuccess>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<PartialSuccess>,
    }

    /// `ExportLogsPartialSuccess` (`rejected_log_records`) and
    /// `ExportTracePartialSuccess` (`rejected_spans`) share their layout.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    /// `google.rpc.Status`, the body of an OTLP/HTTP error answer.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "11")]
        pub observed_time_unix_nano: u64,
        /// `SeverityNumber` enum.
        #[prost(int32, tag = "2")]
        pub severity_number: i32,
        #[prost(string, tag = "3")]
        pub severity_text: String,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed32, tag = "8")]
        pub flags: u32,
        #[prost(bytes = "vec", tag = "9")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "10")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "12")]
        pub event_name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
        #[prost(string, tag = "5")]
        pub name: String,
        /// `Span.SpanKind` enum.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, repeated, tag = "13")]
        pub links: Vec<Link>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Link {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(message, repeated, tag = "4")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        /// `Status.StatusCode` enum.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 7")]
        pub value: Option<any_value::Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            String(String),
            #[prost(bool, tag = "2")]
            Bool(bool),
            #[prost(int64, tag = "3")]
            Int(i64),
            #[prost(double, tag = "4")]
            Double(f64),
            #[prost(message, tag = "5")]
            Array(super::ArrayValue),
            #[prost(bytes = "vec", tag = "7")]
            Bytes(Vec<u8>),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_and_validation() {
        let c = OtlpConfig::new("http://127.0.0.1:4318/");
        assert_eq!(c.logs_url(), "http://127.0.0.1:4318/v1/logs");
        assert_eq!(c.traces_url(), "http://127.0.0.1:4318/v1/traces");
        let c = OtlpConfig::new("https://collector.example/otlp");
        assert_eq!(c.traces_url(), "https://collector.example/otlp/v1/traces");
        assert!(OtlpExporter::new(OtlpConfig::new("nats://x:1")).is_err());
        assert!(OtlpExporter::new(OtlpConfig::new("http://")).is_err());
        let mut c = OtlpConfig::new("http://127.0.0.1:4318");
        c.headers = vec![("Authorization".into(), "Bearer x\r\nX: y".into())];
        assert!(OtlpExporter::new(c).is_err());
    }

    #[test]
    fn the_exporter_can_move_to_an_exporter_thread() {
        fn send<T: Send + 'static>() {}
        send::<OtlpExporter>();
    }

    #[test]
    fn durations_and_counters() {
        assert_eq!(millis_to_nanos(1.5), 1_500_000);
        assert_eq!(millis_to_nanos(-3.0), 0);
        assert_eq!(millis_to_nanos(f64::NAN), 0);
        assert_eq!(counter(Some(&serde_json::json!(12))), Some(12));
        assert_eq!(
            counter(Some(&serde_json::json!("18446744073709551615"))),
            Some(i64::MAX)
        );
        assert_eq!(counter(Some(&serde_json::json!(-1))), None);
    }

    #[test]
    fn a_line_that_is_not_json_is_still_a_log_record() {
        let r = Outgoing {
            stream_id: "s".into(),
            seq: 3,
            tenant: "_unknown".into(),
            msg_id: "s:3".into(),
            line: vec![b'{', 0xff],
        };
        let rec = log_record(&r, None, 1);
        assert_eq!(
            rec.body.and_then(|b| b.value),
            Some(pb::any_value::Value::Bytes(vec![b'{', 0xff]))
        );
        assert_eq!(rec.attributes.len(), 3);
    }
}
