//! The policy on the JS side of the boundary: a tool's gate, the check
//! before a gated tool runs, the records of a blocked call and of an
//! approval, and the alert callback. The rules and every record's shape
//! are the core's ([`agent_audit::policy`]); this module only moves
//! values across.

use std::sync::Arc;

use agent_audit::ingest::event_from_map;
use agent_audit::policy::{self, Alert, PolicyEngine, PreVerdict, Verdict};
use agent_audit::{Event, SpanId, TraceId};
use napi::bindgen_prelude::{Env, Function, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;
use serde_json::Value;

use crate::convert::to_json;
use crate::error::{audit_to_js, to_js};
use crate::{Json, NativeLog, peek_captured};

/// Which policy checks calls of one tool need before they run. Opaque;
/// keep it with the tool (see `NativeLog.gate`).
#[napi]
pub struct ToolGate {
    pub(crate) gate: policy::ToolGate,
    pub(crate) policy: Arc<PolicyEngine>,
}

/// A policy rule's decision about a call before it ran: `block` or
/// `require_approval`, with the rule and what every matching rule adds.
#[napi]
pub struct PolicyDecision {
    pre: PreVerdict,
    verdict: Verdict,
    tool: String,
    args: Value,
}

#[napi]
impl PolicyDecision {
    /// `block` or `require_approval`.
    #[napi(getter)]
    pub fn action(&self) -> String {
        self.verdict.effect.action.as_str().to_string()
    }

    /// The id of the deciding rule.
    #[napi(getter)]
    pub fn rule_id(&self) -> String {
        self.verdict.rule_id.clone()
    }

    /// Why (the rule's description, never the matched text).
    #[napi(getter)]
    pub fn reason(&self) -> String {
        self.verdict.reason.clone()
    }

    /// The rule's family.
    #[napi(getter)]
    pub fn family(&self) -> String {
        self.verdict.family.clone()
    }

    /// The tool the decision is about.
    #[napi(getter)]
    pub fn tool(&self) -> String {
        self.tool.clone()
    }

    /// Flags of every rule that matched the call.
    #[napi(getter)]
    pub fn flags(&self) -> Vec<String> {
        self.pre.risk().flags
    }

    /// Score of every rule that matched the call (capped at 100).
    #[napi(getter)]
    pub fn score(&self) -> u32 {
        self.pre.risk().score
    }

    /// The ids of every rule that matched the call.
    #[napi(getter)]
    pub fn rule_ids(&self) -> Vec<String> {
        self.pre
            .verdicts
            .iter()
            .map(|v| v.rule_id.clone())
            .collect()
    }

    /// The arguments as recorded (before redaction): what an approver is
    /// shown.
    #[napi(getter, ts_return_type = "unknown")]
    pub fn args(&self) -> Json {
        Json(self.args.clone())
    }
}

fn event_of(env: &Env, value: Unknown<'_>) -> napi::Result<Event> {
    let Value::Object(mut m) = to_json(env, value)? else {
        return Err(to_js(
            env,
            "ERR_AUDIT_INVALID_EVENT",
            "an event must be an object",
        ));
    };
    let ts = match m.remove("ts") {
        Some(Value::Number(n)) => n.as_f64(),
        _ => None,
    };
    let mut event = event_from_map(&mut m).map_err(|e| audit_to_js(env, &e))?;
    if let Some(ms) = ts.filter(|ms| ms.is_finite()) {
        event.ts = agent_audit::Timestamp::from_unix_millis(ms as i64);
    }
    Ok(event)
}

#[napi]
impl NativeLog {
    /// The policy gate of a tool: null when no rule that blocks or asks
    /// for approval can match calls of `tool` (they then skip the check).
    /// Compute it once per tool.
    #[napi]
    pub fn gate(&self, tool: String) -> Option<ToolGate> {
        let policy = self.log.policy()?;
        let gate = policy.gate(&tool);
        (!gate.is_open()).then(|| ToolGate {
            gate,
            policy: policy.clone(),
        })
    }

    /// The check before a gated tool runs, on the calling thread: `args`
    /// are the call's arguments (a value from `capture`, which stays
    /// usable, or any JS value). Returns the decision when a rule blocks
    /// the call or asks for approval, else null.
    #[napi]
    pub fn pre_check(
        &self,
        env: &Env,
        gate: &ToolGate,
        tool: String,
        trace_id: String,
        span_id: String,
        args: Unknown<'_>,
    ) -> napi::Result<Option<PolicyDecision>> {
        let args = match peek_captured(env, &args) {
            Some(v) => v,
            None => to_json(env, args)?,
        };
        let trace = TraceId::parse(&trace_id).map_err(|e| audit_to_js(env, &e))?;
        let span = SpanId::parse(&span_id).map_err(|e| audit_to_js(env, &e))?;
        let pre = gate
            .policy
            .pre_check(&gate.gate, &tool, Some(trace), Some(span), &args);
        Ok(pre.decision.clone().map(|verdict| PolicyDecision {
            pre,
            verdict,
            tool,
            args,
        }))
    }

    /// Records a call `decision` stopped before it ran: `event` is the
    /// tool's event as it would have been recorded (status `blocked`, the
    /// error thrown to the caller); the core adds the verdicts' risk and
    /// writes it with the `policy` record. False when not queued.
    #[napi]
    pub fn emit_blocked(
        &self,
        env: &Env,
        decision: &PolicyDecision,
        event: Unknown<'_>,
    ) -> napi::Result<bool> {
        let event = event_of(env, event)?;
        let mut queued = true;
        for record in decision.pre.blocked_records(event) {
            queued &= self.log.emit(record).map_err(|e| audit_to_js(env, &e))?;
        }
        Ok(queued)
    }

    /// Records the answer to an approval `decision` asked for: a
    /// `human_review` (`approved` | `denied` | `timeout`) about the tool
    /// call `subject` (its envelope: trace, span, parent, principal), with
    /// the reviewer, the reason (erasable) and the wait. False when not
    /// queued.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn emit_review(
        &self,
        env: &Env,
        decision: &PolicyDecision,
        subject: Unknown<'_>,
        outcome: String,
        reviewer: Option<String>,
        reason: Option<String>,
        wait_ms: f64,
    ) -> napi::Result<bool> {
        if !matches!(outcome.as_str(), "approved" | "denied" | "timeout") {
            return Err(to_js(
                env,
                "ERR_AUDIT_INVALID_EVENT",
                &format!("an approval is approved, denied or timeout, got {outcome:?}"),
            ));
        }
        let subject = event_of(env, subject)?;
        let record = PolicyEngine::review_event(
            &decision.verdict,
            &subject,
            &outcome,
            reviewer,
            reason,
            wait_ms.max(0.0),
        );
        self.log.emit(record).map_err(|e| audit_to_js(env, &e))
    }

    /// Sets the function called with each `alert` verdict, as JSON text
    /// (rule_id, reason, flags, score, trace_id, span_id, tool), or
    /// removes it. It is called on this thread's event loop, never keeps
    /// the process alive, and alerts raised while the loop is gone are
    /// dropped.
    #[napi]
    pub fn set_alert_handler(&self, handler: Option<Function<'_, String, ()>>) -> napi::Result<()> {
        let Some(handler) = handler else {
            self.log.set_alert_handler(None);
            return Ok(());
        };
        let tsfn = handler
            .build_threadsafe_function::<String>()
            .weak::<true>()
            .build()?;
        self.log
            .set_alert_handler(Some(Arc::new(move |alert: &Alert| {
                let _ = tsfn.call(
                    alert.to_json().to_string(),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            })));
        Ok(())
    }

    /// The version of the policy in force, or null without a policy.
    #[napi(getter)]
    pub fn policy_version(&self) -> Option<String> {
        self.log.policy().map(|p| p.version().to_string())
    }
}
