//! Trace-level compliance: each trace's risk score, its tier, and the
//! tier's requirements it does not meet; and the review queue. Both read
//! the records of a log, so they work years later on any copy of it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::PolicyEngine;
use crate::error::{AuditError, ErrorKind, Result};
use crate::trace::{LoadedRecord, load_records};

/// Something a trace of a tier must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// Every tool call has a result status and a duration.
    ToolStatusAndDuration,
    /// The principal is identified: an agent id and a user (id or hash) or
    /// a system caller, on every record of the trace.
    PrincipalIdentified,
    /// Every record has a retention class.
    RetentionClassSet,
    /// Every tool call flagged `sends_external_message` has an approving
    /// `human_review` before it in the trace.
    ApprovalBeforeExternalSend,
    /// The trace has its `trace_end`.
    TraceClosed,
    /// Every model call names its model and provider.
    ModelIdentified,
    /// Every record carries the policy version it was judged under.
    PolicyVersionSet,
}

impl Requirement {
    /// Every requirement.
    pub const ALL: [Requirement; 7] = [
        Requirement::ToolStatusAndDuration,
        Requirement::PrincipalIdentified,
        Requirement::RetentionClassSet,
        Requirement::ApprovalBeforeExternalSend,
        Requirement::TraceClosed,
        Requirement::ModelIdentified,
        Requirement::PolicyVersionSet,
    ];

    /// Its name in policy files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::ToolStatusAndDuration => "tool_status_and_duration",
            Requirement::PrincipalIdentified => "principal_identified",
            Requirement::RetentionClassSet => "retention_class_set",
            Requirement::ApprovalBeforeExternalSend => "approval_before_external_send",
            Requirement::TraceClosed => "trace_closed",
            Requirement::ModelIdentified => "model_identified",
            Requirement::PolicyVersionSet => "policy_version_set",
        }
    }

    /// Parses a requirement name.
    pub fn parse(s: &str) -> Option<Requirement> {
        Requirement::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A compliance tier: traces at or above `min_score`, or carrying any of
/// `flags_any`, must meet `require`. The first matching tier applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    /// Tier name, e.g. `high`.
    pub name: String,
    /// Score from which a trace is in this tier.
    pub min_score: Option<u32>,
    /// Flags that put a trace in this tier whatever its score.
    pub flags_any: Vec<String>,
    /// What its traces must satisfy.
    pub require: Vec<Requirement>,
}

/// Name of the tier of traces no configured tier matches.
pub const BASELINE_TIER: &str = "baseline";

fn risk_of(r: &Map<String, Value>) -> (u32, Vec<String>) {
    let risk = r.get("risk");
    let score = risk
        .and_then(|v| v.get("score"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(100) as u32;
    let flags = crate::trace::strings(risk.and_then(|v| v.get("flags")));
    (score, flags)
}

fn kind(r: &Map<String, Value>) -> &str {
    r.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The documented trace score: `100 × (1 − Π (1 − sᵢ/100))` over the
/// trace's steps (policy verdict records and `trace_end` excluded).
pub fn combine_scores(scores: impl IntoIterator<Item = u32>) -> u32 {
    let safe: f64 = scores
        .into_iter()
        .map(|s| 1.0 - f64::from(s.min(100)) / 100.0)
        .product();
    (100.0 * (1.0 - safe)).round().clamp(0.0, 100.0) as u32
}

/// One trace's compliance report.
fn score_trace(policy: &PolicyEngine, trace_id: &str, mut records: Vec<LoadedRecord>) -> Value {
    records.sort_by(|a, b| {
        let ta = a.record.get("ts").and_then(Value::as_str).unwrap_or("");
        let tb = b.record.get("ts").and_then(Value::as_str).unwrap_or("");
        ta.cmp(tb)
            .then(a.stream.cmp(&b.stream))
            .then(a.seq.cmp(&b.seq))
    });
    let mut flags: Vec<String> = Vec::new();
    let mut step_scores = Vec::new();
    let mut end_score = None;
    let mut steps = Vec::new();
    for lr in &records {
        let r = &lr.record;
        let (s, f) = risk_of(r);
        for flag in f {
            if !flags.contains(&flag) {
                flags.push(flag);
            }
        }
        match kind(r) {
            "trace_end" => end_score = Some(s),
            "policy" => {}
            _ => step_scores.push(s),
        }
        if s > 0 && kind(r) != "trace_end" && kind(r) != "policy" {
            steps.push(json!({
                "span_id": r.get("span_id").cloned().unwrap_or(Value::Null),
                "kind": kind(r),
                "name": step_name(r),
                "score": s,
                "flags": r.get("risk").and_then(|v| v.get("flags")).cloned().unwrap_or(json!([])),
            }));
        }
    }
    let computed = combine_scores(step_scores);
    let score = end_score.map_or(computed, |e| e.max(computed));
    let tier = policy.tiers().iter().find(|t| {
        t.min_score.is_some_and(|m| score >= m) || t.flags_any.iter().any(|f| flags.contains(f))
    });
    let (tier_name, require) = match tier {
        Some(t) => (t.name.as_str(), t.require.as_slice()),
        None => (BASELINE_TIER, policy.default_requirements()),
    };
    let mut unmet = Vec::new();
    for req in require {
        unmet.extend(check(*req, &records));
    }
    json!({
        "trace_id": trace_id,
        "score": score,
        "tier": tier_name,
        "flags": flags,
        "requirements": require.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "unmet": unmet,
        "compliant": unmet.is_empty(),
        "risky_steps": steps,
    })
}

fn step_name(r: &Map<String, Value>) -> Value {
    r.get("tool")
        .and_then(|t| t.get("name"))
        .or_else(|| r.get("model").and_then(|m| m.get("name")))
        .or_else(|| r.get("task_kind"))
        .or_else(|| r.get("decision"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn unmet(req: Requirement, r: Option<&Map<String, Value>>, why: String) -> Value {
    json!({
        "requirement": req.as_str(),
        "span_id": r.and_then(|r| r.get("span_id")).cloned().unwrap_or(Value::Null),
        "seq": r.and_then(|r| r.get("seq")).cloned().unwrap_or(Value::Null),
        "reason": why,
    })
}

fn check(req: Requirement, records: &[LoadedRecord]) -> Vec<Value> {
    let mut out = Vec::new();
    let audited = || {
        records
            .iter()
            .map(|l| &l.record)
            .filter(|r| kind(r) != "policy")
    };
    match req {
        Requirement::ToolStatusAndDuration => {
            for r in audited().filter(|r| kind(r) == "tool_call") {
                let missing: Vec<&str> = ["result_status", "duration_ms"]
                    .into_iter()
                    .filter(|f| r.get(*f).is_none_or(Value::is_null))
                    .collect();
                if !missing.is_empty() {
                    out.push(unmet(
                        req,
                        Some(r),
                        format!("tool call without {}", missing.join(" and ")),
                    ));
                }
            }
        }
        Requirement::PrincipalIdentified => {
            if let Some(r) = audited().find(|r| !principal_identified(r)) {
                out.push(unmet(
                    req,
                    Some(r),
                    "no agent id, or neither a user (id or hash) nor a system caller".into(),
                ));
            }
        }
        Requirement::RetentionClassSet => {
            if let Some(r) = audited().find(|r| {
                r.get("retention_class")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            }) {
                out.push(unmet(
                    req,
                    Some(r),
                    "record without a retention class".into(),
                ));
            }
        }
        Requirement::PolicyVersionSet => {
            if let Some(r) = audited().find(|r| {
                r.get("policy_version")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            }) {
                out.push(unmet(
                    req,
                    Some(r),
                    "record without a policy version".into(),
                ));
            }
        }
        Requirement::TraceClosed => {
            if !audited().any(|r| kind(r) == "trace_end") {
                out.push(unmet(req, None, "the trace has no trace_end".into()));
            }
        }
        Requirement::ModelIdentified => {
            for r in audited().filter(|r| kind(r) == "llm_call") {
                let m = r.get("model");
                let named = m
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                let provider = m
                    .and_then(|m| m.get("provider"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                if !(named && provider) {
                    out.push(unmet(
                        req,
                        Some(r),
                        "model call without model name and provider".into(),
                    ));
                }
            }
        }
        Requirement::ApprovalBeforeExternalSend => {
            // Records are in time order: an approval counts for the sends
            // after it that it names, or, naming none, for the next send.
            let mut approvals: Vec<Option<String>> = Vec::new();
            for r in audited() {
                match kind(r) {
                    "human_review"
                        if r.get("decision").and_then(Value::as_str) == Some("approved") =>
                    {
                        approvals.push(
                            r.get("subject_span_id")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        );
                    }
                    "tool_call" if risk_of(r).1.iter().any(|f| f == "sends_external_message") => {
                        if r.get("result_status").and_then(Value::as_str) == Some("blocked") {
                            continue;
                        }
                        let span = r.get("span_id").and_then(Value::as_str);
                        let hit = approvals
                            .iter()
                            .position(|a| a.as_deref() == span)
                            .or_else(|| approvals.iter().position(Option::is_none));
                        match hit {
                            Some(i) => {
                                approvals.remove(i);
                            }
                            None => out.push(unmet(
                                req,
                                Some(r),
                                "external send without a human approval before it".into(),
                            )),
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

fn principal_identified(r: &Map<String, Value>) -> bool {
    let Some(p) = r.get("principal").and_then(Value::as_object) else {
        return false;
    };
    let has = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    has("agent_id")
        && (has("user_id")
            || has("user_id_hash")
            || p.get("caller").and_then(Value::as_str) == Some("system"))
}

/// `agent-audit score`: every trace of the log (or just `trace_id`) with
/// its score, tier and unmet requirements, judged by `policy`.
pub fn score_log(log: &Path, trace_id: Option<&str>, policy: &PolicyEngine) -> Result<Value> {
    let records = load_records(log, trace_id)?;
    let mut by_trace: BTreeMap<String, Vec<LoadedRecord>> = BTreeMap::new();
    for r in records {
        if let Some(t) = r.record.get("trace_id").and_then(Value::as_str) {
            by_trace.entry(t.to_string()).or_default().push(r);
        }
    }
    if let Some(t) = trace_id
        && !by_trace.contains_key(t)
    {
        return Err(AuditError::new(
            ErrorKind::NotFound,
            format!("no trace {t} in {}", log.display()),
        ));
    }
    let traces: Vec<Value> = by_trace
        .into_iter()
        .map(|(id, recs)| score_trace(policy, &id, recs))
        .collect();
    Ok(json!({ "policy_version": policy.version(), "traces": traces }))
}

/// `agent-audit review`: the traces a `review` rule put on the review
/// queue, each with the verdicts that did, oldest first.
pub fn review_queue(log: &Path) -> Result<Value> {
    let records = load_records(log, None)?;
    let mut by_trace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut first_seen: BTreeMap<String, String> = BTreeMap::new();
    for lr in records {
        let r = &lr.record;
        if kind(r) != "policy" || r.get("action").and_then(Value::as_str) != Some("review") {
            continue;
        }
        let trace = r
            .get("trace_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ts = r
            .get("ts")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        first_seen
            .entry(trace.clone())
            .and_modify(|t| {
                if ts < *t {
                    t.clone_from(&ts)
                }
            })
            .or_insert(ts.clone());
        by_trace.entry(trace).or_default().push(json!({
            "ts": ts,
            "rule_id": r.get("rule_id").cloned().unwrap_or(Value::Null),
            "tool": r.get("tool").cloned().unwrap_or(Value::Null),
            "subject_span_id": r.get("subject_span_id").cloned().unwrap_or(Value::Null),
            "reason": r.get("reason").cloned().unwrap_or(Value::Null),
            "flags": r.get("risk").and_then(|v| v.get("flags")).cloned().unwrap_or(json!([])),
        }));
    }
    let mut traces: Vec<(String, Value)> = by_trace
        .into_iter()
        .map(|(t, mut verdicts)| {
            verdicts.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
            let since = first_seen.get(&t).cloned().unwrap_or_default();
            (
                since.clone(),
                json!({ "trace_id": t, "since": since, "verdicts": verdicts }),
            )
        })
        .collect();
    traces.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(json!({ "traces": traces.into_iter().map(|(_, v)| v).collect::<Vec<_>>() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_combine_like_independent_risks() {
        assert_eq!(combine_scores([]), 0);
        assert_eq!(combine_scores([50]), 50);
        assert_eq!(combine_scores([50, 50]), 75);
        assert_eq!(combine_scores([100, 10]), 100);
        assert_eq!(combine_scores([20, 0, 30]), 44);
    }
}
