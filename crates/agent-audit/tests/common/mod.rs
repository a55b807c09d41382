//! Shared helpers for the core's integration tests: small real logs.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_audit::record::{Body, Outcome, ResultStatus, ToolCall, ToolInfo};
use agent_audit::{AuditLog, Event, KeySource, LogConfig, PayloadPart, Principal, SpanId, TraceId};
use serde_json::json;

pub const FIXED_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBZzHb1JxcK5k3uAQ0nDkcoZl+MYqzfXh7zFGVuGeYd2\n-----END PRIVATE KEY-----\n";

pub fn config(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.key = KeySource::Pem(FIXED_KEY_PEM.into());
    c.principal = Principal {
        tenant_id: Some("t_test".into()),
        agent_id: Some("test-agent".into()),
        ..Default::default()
    };
    c
}

pub fn tool_event(trace: TraceId, parent: Option<SpanId>, i: u64) -> Event {
    Event::new(Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: "db.query".into(),
            version: Some("2.3.1".into()),
            ..Default::default()
        },
        outcome: Outcome {
            result_status: Some(ResultStatus::Ok),
            duration_ms: Some(1.5),
            error_type: None,
        },
        ..Default::default()
    }))
    .in_trace(trace, SpanId::random(), parent)
    .with_part(
        PayloadPart::Args,
        json!({"sql": "select * from orders where id = ?", "params": [i]}),
    )
    .with_part(
        PayloadPart::Result,
        json!({"rows": 1, "order": format!("ORD-{i:06}")}),
    )
}

/// Writes `n` tool calls in one trace and closes the log. Returns the
/// stream directory.
pub fn write_log(dir: &Path, n: u64, tweak: impl FnOnce(&mut LogConfig)) -> PathBuf {
    let mut c = config(dir);
    tweak(&mut c);
    let log = AuditLog::open(c).unwrap();
    let trace = TraceId::random();
    for i in 0..n {
        assert!(log.emit(tool_event(trace, None, i)).unwrap());
    }
    assert!(log.shutdown(Duration::from_secs(30)));
    log.stream_dir().to_path_buf()
}

pub fn segment(stream_dir: &Path) -> PathBuf {
    stream_dir.join("seg-000000.jsonl")
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(path, s).unwrap();
}

pub fn shared<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
