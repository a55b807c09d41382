//! The typical tool-call event the writer examples time: the same one the
//! criterion benchmark (`benches/core.rs`) uses.

use agent_audit::record::{Body, Outcome, ResultStatus, ToolCall, ToolInfo};
use agent_audit::{Event, PayloadPart, SpanId, TraceId};
use serde_json::json;

/// Event `i` of a run: a CRM update with an e-mail address to redact.
pub fn tool_event(i: u64, trace: TraceId, parent: SpanId) -> Event {
    Event::new(Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: "crm.update_customer".into(),
            version: Some("2.3.1".into()),
            ..Default::default()
        },
        outcome: Outcome {
            result_status: Some(ResultStatus::Ok),
            duration_ms: Some(12.5),
            error_type: None,
        },
        ..Default::default()
    }))
    .in_trace(trace, SpanId::random(), Some(parent))
    .with_part(
        PayloadPart::Args,
        json!({"customer_id": format!("cus_{i:08}"), "email": "jane.doe@example.com", "sql": "UPDATE customers SET tier = ? WHERE id = ?", "tier": "gold", "notify": true}),
    )
    .with_part(
        PayloadPart::Result,
        json!({"status": "updated", "rows_affected": 1, "ticket": format!("TCK-{i:06}")}),
    )
}
