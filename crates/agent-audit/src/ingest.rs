//! Events from JSON lines: how any language logs through a pipe
//! (`agent-audit ingest LOG < events.jsonl`).
//!
//! A line is shaped like a record without the fields the writer assigns
//! (`v`, `stream_id`, `seq`, `prev`, `hash`, `sig`, `payload_digest`, the
//! part hashes): `kind`, optional `ts`, trace ids, `principal`,
//! `retention_class`, `risk`, `capture`, `metadata`, `otel`, `payload`
//! (an object of parts: `args`, `result` ...) and the kind's own fields.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{AuditError, Result};
use crate::ids::{SpanId, Timestamp, TraceId};
use crate::jcs::parse_strict;
use crate::record::{Body, CaptureMode, Event, Kind, OtelContext, PayloadPart, Principal, Risk};

const WRITER_FIELDS: [&str; 7] = [
    "v",
    "stream_id",
    "seq",
    "prev",
    "hash",
    "sig",
    "payload_digest",
];

fn bad(msg: impl Into<String>) -> AuditError {
    AuditError::invalid_event(msg)
}

fn take_str(m: &mut Map<String, Value>, k: &str) -> Result<Option<String>> {
    match m.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(format!("{k} must be a string, got {other}"))),
    }
}

fn take_typed<T: serde::de::DeserializeOwned>(
    m: &mut Map<String, Value>,
    k: &str,
) -> Result<Option<T>> {
    match m.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| bad(format!("{k}: {e}"))),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Parses one JSON line into an event, or says why not.
pub fn parse_event_line(line: &[u8]) -> Result<Event> {
    let value = parse_strict(line).map_err(|e| bad(e.to_string()))?;
    let Value::Object(mut m) = value else {
        return Err(bad("an event must be a JSON object"));
    };
    event_from_map(&mut m)
}

/// Builds an event from an object (consumed field by field).
pub fn event_from_map(m: &mut Map<String, Value>) -> Result<Event> {
    for f in WRITER_FIELDS {
        if m.contains_key(f) {
            return Err(bad(format!(
                "field {f} is assigned by the writer and must not be sent"
            )));
        }
    }
    let kind_name = m
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing kind"))?
        .to_string();
    let kind = Kind::parse(&kind_name).ok_or_else(|| bad(format!("unknown kind {kind_name:?}")))?;
    if kind.is_writer_only() {
        return Err(bad(format!("kind {kind} is written by the log itself")));
    }
    // RFC 3339 text, or milliseconds since the epoch (what JavaScript's
    // Date.now() and Python's time.time() * 1000 give).
    let ts = match m.remove("ts") {
        None | Some(Value::Null) => Timestamp::now(),
        Some(Value::String(t)) => Timestamp::parse_rfc3339(&t)?,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(ms) if ms.is_finite() && ms.abs() < 1e15 => Timestamp((ms * 1e6) as i64),
            _ => return Err(bad(format!("ts out of range: {n}"))),
        },
        Some(other) => {
            return Err(bad(format!(
                "ts must be RFC 3339 text or epoch milliseconds, got {other}"
            )));
        }
    };
    let trace_id = take_str(m, "trace_id")?
        .map(|s| TraceId::parse(&s))
        .transpose()?;
    let span_id = take_str(m, "span_id")?
        .map(|s| SpanId::parse(&s))
        .transpose()?;
    let parent_span_id = take_str(m, "parent_span_id")?
        .map(|s| SpanId::parse(&s))
        .transpose()?;
    let principal: Option<Principal> = take_typed(m, "principal")?;
    let retention_class = take_str(m, "retention_class")?;
    let risk: Option<Risk> = take_typed(m, "risk")?;
    let capture = take_str(m, "capture")?
        .map(|c| CaptureMode::parse(&c))
        .transpose()?;
    let metadata = match m.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(_) => return Err(bad("metadata must be an object")),
    };
    let otel: Option<OtelContext> = take_typed(m, "otel")?;
    let mut payload = BTreeMap::new();
    match m.remove("payload") {
        None | Some(Value::Null) => {}
        Some(Value::Object(parts)) => {
            for (k, v) in parts {
                let part = PayloadPart::parse(&k).ok_or_else(|| {
                    bad(format!(
                        "unknown payload part {k:?} (expected one of: {})",
                        PayloadPart::ALL.map(PayloadPart::as_str).join(", ")
                    ))
                })?;
                payload.insert(part, v);
            }
        }
        Some(_) => return Err(bad("payload must be an object of parts")),
    }
    let rest = Value::Object(m.clone());
    let body: Body = serde_json::from_value(rest).map_err(|e| bad(format!("{kind}: {e}")))?;
    // Refuse fields the kind does not have rather than drop them silently.
    let known = serde_json::to_value(&body).map_err(|e| bad(e.to_string()))?;
    for (k, v) in m.iter() {
        if known.get(k).is_none() && !is_empty_value(v) {
            return Err(bad(format!("unknown field {k:?} for kind {kind}")));
        }
    }
    let event = Event {
        ts,
        trace_id,
        span_id,
        parent_span_id,
        principal: principal.map(Arc::new),
        retention_class: retention_class.map(Arc::from),
        risk: risk.unwrap_or_default(),
        capture,
        metadata,
        otel,
        body,
        payload,
    };
    event.validate()?;
    Ok(event)
}

/// A rejected line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// Splits input into events and rejected lines (blank lines are skipped).
/// Invalid UTF-8 rejects only its own line.
pub fn parse_event_lines(input: &[u8]) -> (Vec<(usize, Event)>, Vec<Rejected>) {
    let mut ok = Vec::new();
    let mut rejected = Vec::new();
    for (i, raw) in input.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_event_line(line) {
            Ok(e) => ok.push((i + 1, e)),
            Err(e) => rejected.push(Rejected {
                line: i + 1,
                reason: e.to_string(),
            }),
        }
    }
    (ok, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_line_parses() {
        let e = parse_event_line(
            br#"{"kind":"tool_call","ts":"2026-04-16T13:44:37.123Z","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","tool":{"name":"db.query"},"result_status":"ok","duration_ms":84,"payload":{"args":{"sql":"select 1"}}}"#,
        )
        .unwrap();
        assert_eq!(e.kind(), Kind::ToolCall);
        assert!(e.payload.contains_key(&PayloadPart::Args));
    }

    #[test]
    fn bad_lines_say_why() {
        let cases: [(&[u8], &str); 8] = [
            (
                br#"{"kind":"tool_call","tool":{"name":"x"},"hash":"x"}"#,
                "assigned by the writer",
            ),
            (br#"{"kind":"nope"}"#, "unknown kind"),
            (
                br#"{"kind":"tool_call","tool":{"name":"x"},"bogus":1}"#,
                "unknown field",
            ),
            (
                br#"{"kind":"tool_call","tool":{"name":"x"},"tool":{"name":"y"}}"#,
                "duplicate",
            ),
            (b"{\"kind\":\"decision\",\"decision\":\"\xff\"}", "UTF-8"),
            (
                br#"{"kind":"llm_call","model":{"name":"m"},"cost_usd":NaN}"#,
                "",
            ),
            (
                br#"{"kind":"gap","lost":1,"reason":"x"}"#,
                "written by the log",
            ),
            (
                br#"{"kind":"tool_call","tool":{"name":"x"},"payload":{"argz":1}}"#,
                "unknown payload part",
            ),
        ];
        for (line, want) in cases {
            let err = parse_event_line(line).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn ts_may_be_epoch_milliseconds() {
        let e =
            parse_event_line(br#"{"kind":"decision","decision":"a","ts":1776347077123}"#).unwrap();
        assert_eq!(e.ts.to_rfc3339(), "2026-04-16T13:44:37.123Z");
        assert!(parse_event_line(br#"{"kind":"decision","decision":"a","ts":true}"#).is_err());
    }

    #[test]
    fn lines_are_numbered() {
        let (ok, bad) = parse_event_lines(b"{\"kind\":\"decision\",\"decision\":\"a\"}\n\nnot json\n{\"kind\":\"decision\",\"decision\":\"b\"}\n");
        assert_eq!(ok.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, 3);
    }
}
