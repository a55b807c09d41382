//! Reading tasks back: listing the traces of a log and rebuilding one
//! trace as a single timeline document (DESIGN.md, `show --json`), across
//! every stream and process that wrote to it.
//!
//! Reading is not verifying: malformed lines are skipped here; run the
//! verifier to learn whether the log can be trusted.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{AuditError, ErrorKind, Result};
use crate::ids::Timestamp;
use crate::jcs::parse_strict;
use crate::reader::{StreamFiles, list_streams};

/// A record as read, with where it came from.
#[derive(Clone, Debug)]
pub struct LoadedRecord {
    /// Index of its stream in the log's stream list.
    pub stream: usize,
    /// Its seq.
    pub seq: u64,
    /// The whole record.
    pub record: Map<String, Value>,
}

impl LoadedRecord {
    fn str(&self, k: &str) -> Option<&str> {
        self.record.get(k).and_then(Value::as_str)
    }
    fn ts(&self) -> Timestamp {
        self.str("ts")
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            .unwrap_or_default()
    }
}

/// The strings of a JSON array (none when it is not one).
pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Every parseable record of a log, optionally only those of one trace.
pub fn load_records(log: &Path, trace_id: Option<&str>) -> Result<Vec<LoadedRecord>> {
    let mut out = Vec::new();
    for (si, dir) in list_streams(log)?.iter().enumerate() {
        let files = StreamFiles::read(dir)?;
        for line in files.lines() {
            if let Some(t) = trace_id {
                // Cheap pre-filter before parsing.
                if !line.bytes.windows(t.len()).any(|w| w == t.as_bytes()) {
                    continue;
                }
            }
            let Ok(Value::Object(record)) = parse_strict(line.bytes) else {
                continue;
            };
            if trace_id.is_some_and(|t| record.get("trace_id").and_then(Value::as_str) != Some(t)) {
                continue;
            }
            let seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
            out.push(LoadedRecord {
                stream: si,
                seq,
                record,
            });
        }
    }
    Ok(out)
}

/// One line of `agent-audit traces`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TraceSummary {
    /// Trace id.
    pub trace_id: String,
    /// Task kind from `trace_start`.
    pub task_kind: Option<String>,
    /// Start time.
    pub started_at: Option<String>,
    /// End time.
    pub ended_at: Option<String>,
    /// Outcome from `trace_end`, or `open`.
    pub outcome: String,
    /// Number of steps.
    pub steps: usize,
    /// Every risk flag raised in the trace.
    pub risk_flags: Vec<String>,
    /// Trace risk score.
    pub risk_score: u64,
}

/// Filters for [`list_traces`].
#[derive(Clone, Debug, Default)]
pub struct TraceFilter {
    /// Only traces with this risk flag.
    pub flag: Option<String>,
    /// Only traces started at or after this time.
    pub since: Option<Timestamp>,
}

/// The traces of a log, oldest first.
pub fn list_traces(log: &Path, filter: &TraceFilter) -> Result<Vec<TraceSummary>> {
    let records = load_records(log, None)?;
    let mut by_trace: BTreeMap<String, Vec<LoadedRecord>> = BTreeMap::new();
    for r in records {
        if let Some(t) = r.str("trace_id").map(str::to_string) {
            by_trace.entry(t).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for (trace_id, recs) in by_trace {
        let doc = build_document(&trace_id, recs);
        let summary = TraceSummary {
            trace_id,
            task_kind: doc
                .get("task")
                .and_then(|t| t.get("kind"))
                .and_then(Value::as_str)
                .map(str::to_string),
            started_at: doc
                .get("started_at")
                .and_then(Value::as_str)
                .map(str::to_string),
            ended_at: doc
                .get("ended_at")
                .and_then(Value::as_str)
                .map(str::to_string),
            outcome: doc
                .get("outcome")
                .and_then(Value::as_str)
                .unwrap_or("open")
                .to_string(),
            steps: doc
                .get("steps")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            risk_flags: strings(doc.get("risk_flags")),
            risk_score: doc.get("risk_score").and_then(Value::as_u64).unwrap_or(0),
        };
        if let Some(f) = &filter.flag
            && !summary.risk_flags.iter().any(|x| x == f)
        {
            continue;
        }
        if let Some(since) = filter.since {
            let started = summary
                .started_at
                .as_deref()
                .and_then(|s| Timestamp::parse_rfc3339(s).ok());
            if started.is_none_or(|s| s < since) {
                continue;
            }
        }
        out.push(summary);
    }
    out.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then(a.trace_id.cmp(&b.trace_id))
    });
    Ok(out)
}

/// The trace document of one trace.
pub fn show_trace(log: &Path, trace_id: &str) -> Result<Value> {
    let records = load_records(log, Some(trace_id))?;
    if records.is_empty() {
        return Err(AuditError::new(
            ErrorKind::NotFound,
            format!("no trace {trace_id} in {}", log.display()),
        ));
    }
    Ok(Value::Object(build_document(trace_id, records)))
}

const STEP_FIELDS: [&str; 14] = [
    "args_hash",
    "args_redacted",
    "result_hash",
    "result_status",
    "duration_ms",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "decision",
    "reviewer",
    "rule_id",
    "action",
    "operation",
];

fn build_document(trace_id: &str, mut recs: Vec<LoadedRecord>) -> Map<String, Value> {
    recs.sort_by(|a, b| {
        a.ts()
            .cmp(&b.ts())
            .then(a.stream.cmp(&b.stream))
            .then(a.seq.cmp(&b.seq))
    });
    let start = recs.iter().find(|r| r.str("kind") == Some("trace_start"));
    let end = recs
        .iter()
        .rev()
        .find(|r| r.str("kind") == Some("trace_end"));
    let steps: Vec<&LoadedRecord> = recs
        .iter()
        .filter(|r| !matches!(r.str("kind"), Some("trace_start" | "trace_end")))
        .collect();

    // Timeline: a pre-order walk of the span tree, siblings by start time.
    let span_index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.str("span_id").map(|s| (s, i)))
        .collect();
    let mut children: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
    for (i, r) in steps.iter().enumerate() {
        let parent = r
            .str("parent_span_id")
            .and_then(|p| span_index.get(p).copied())
            .filter(|p| *p != i);
        children.entry(parent).or_default().push(i);
    }
    let mut ordered = Vec::with_capacity(steps.len());
    let mut stack: Vec<usize> = children
        .get(&None)
        .map(|c| c.iter().rev().copied().collect())
        .unwrap_or_default();
    let mut visited = vec![false; steps.len()];
    while let Some(i) = stack.pop() {
        if visited.get(i).copied().unwrap_or(true) {
            continue;
        }
        if let Some(v) = visited.get_mut(i) {
            *v = true;
        }
        ordered.push(i);
        if let Some(c) = children.get(&Some(i)) {
            stack.extend(c.iter().rev().copied());
        }
    }
    // Anything in a parent cycle is still shown, in time order.
    ordered.extend((0..steps.len()).filter(|i| !visited.get(*i).copied().unwrap_or(true)));
    let step_id_of: HashMap<usize, usize> = ordered
        .iter()
        .enumerate()
        .map(|(n, i)| (*i, n + 1))
        .collect();

    let mut all_flags: Vec<String> = Vec::new();
    let mut step_scores: Vec<u32> = Vec::new();
    let mut out_steps = Vec::with_capacity(ordered.len());
    for i in &ordered {
        let Some(r) = steps.get(*i) else { continue };
        let mut s = Map::new();
        s.insert(
            "step_id".into(),
            Value::from(step_id_of.get(i).copied().unwrap_or(0) as u64),
        );
        s.insert(
            "kind".into(),
            r.record.get("kind").cloned().unwrap_or(Value::Null),
        );
        s.insert(
            "ts".into(),
            r.record.get("ts").cloned().unwrap_or(Value::Null),
        );
        s.insert(
            "event_id".into(),
            r.record.get("event_id").cloned().unwrap_or(Value::Null),
        );
        s.insert(
            "span_id".into(),
            r.record.get("span_id").cloned().unwrap_or(Value::Null),
        );
        let parent_step = r
            .str("parent_span_id")
            .and_then(|p| span_index.get(p))
            .and_then(|p| step_id_of.get(p))
            .map_or(Value::Null, |n| Value::from(*n as u64));
        s.insert("parent_step".into(), parent_step);
        if let Some(m) = r.record.get("model") {
            s.insert(
                "model".into(),
                m.get("name").cloned().unwrap_or(Value::Null),
            );
            if let Some(p) = m.get("provider") {
                s.insert("provider".into(), p.clone());
            }
        }
        if let Some(Value::String(t)) = r.record.get("tool") {
            // A policy verdict names its tool as a string.
            s.insert("tool".into(), Value::String(t.clone()));
        } else if let Some(t) = r.record.get("tool") {
            s.insert("tool".into(), t.get("name").cloned().unwrap_or(Value::Null));
            if let Some(v) = t.get("version") {
                s.insert("tool_version".into(), v.clone());
            }
        }
        if let Some(c) = r.record.get("child_agent_id") {
            s.insert("agent".into(), c.clone());
        }
        for (from, to) in [
            ("source", "source"),
            ("store", "store"),
            ("retrieved_docs", "retrieved_docs"),
        ] {
            if let Some(v) = r.record.get(from) {
                s.insert(to.into(), v.clone());
            }
        }
        for f in STEP_FIELDS {
            if let Some(v) = r.record.get(f) {
                s.insert(f.into(), v.clone());
            }
        }
        if let Some(g) = r.record.get("guardrails") {
            s.insert("guardrails".into(), g.clone());
        }
        let flags = r
            .record
            .get("risk")
            .and_then(|x| x.get("flags"))
            .cloned()
            .unwrap_or(Value::Array(vec![]));
        for f in flags
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !all_flags.iter().any(|x| x == f) {
                all_flags.push(f.to_string());
            }
        }
        let score = r
            .record
            .get("risk")
            .and_then(|x| x.get("score"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if r.str("kind") != Some("policy") {
            step_scores.push(u32::try_from(score.min(100)).unwrap_or(100));
        }
        s.insert("risk_score".into(), Value::from(score));
        s.insert("risk_flags".into(), flags);
        out_steps.push(Value::Object(s));
    }

    let mut doc = Map::new();
    doc.insert("trace_id".into(), Value::String(trace_id.to_string()));
    let first = recs.first();
    doc.insert(
        "started_at".into(),
        start
            .or(first)
            .and_then(|r| r.record.get("ts").cloned())
            .unwrap_or(Value::Null),
    );
    doc.insert(
        "ended_at".into(),
        end.and_then(|r| r.record.get("ts").cloned())
            .unwrap_or(Value::Null),
    );
    doc.insert(
        "principal".into(),
        start
            .or(first)
            .and_then(|r| r.record.get("principal").cloned())
            .unwrap_or(Value::Null),
    );
    let mut task = Map::new();
    task.insert(
        "kind".into(),
        start
            .and_then(|r| r.record.get("task_kind").cloned())
            .unwrap_or(Value::Null),
    );
    task.insert(
        "input_hash".into(),
        start
            .and_then(|r| r.record.get("input_hash").cloned())
            .unwrap_or(Value::Null),
    );
    doc.insert("task".into(), Value::Object(task));
    doc.insert("steps".into(), Value::Array(out_steps));
    doc.insert(
        "outcome".into(),
        end.and_then(|r| r.record.get("outcome").cloned())
            .unwrap_or_else(|| Value::String("open".into())),
    );
    if let Some(e) = end {
        for f in e
            .record
            .get("risk")
            .and_then(|x| x.get("flags"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !all_flags.iter().any(|x| x == f) {
                all_flags.push(f.to_string());
            }
        }
    }
    let end_score = end
        .and_then(|r| r.record.get("risk"))
        .and_then(|x| x.get("score"))
        .and_then(Value::as_u64);
    // The trace score of docs/policy.md, or trace_end's if higher.
    let combined = u64::from(crate::policy::score::combine_scores(step_scores));
    doc.insert(
        "risk_score".into(),
        Value::from(end_score.unwrap_or(combined).max(combined)),
    );
    doc.insert(
        "risk_flags".into(),
        Value::Array(all_flags.into_iter().map(Value::String).collect()),
    );
    doc.insert(
        "retention_class".into(),
        start
            .or(first)
            .and_then(|r| r.record.get("retention_class").cloned())
            .unwrap_or(Value::Null),
    );
    doc
}

/// Plain-text rendering of a trace document for terminals.
pub fn render_trace(doc: &Value) -> String {
    let g = |k: &str| doc.get(k).map(value_text).unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!(
        "trace {}  task={}\n",
        g("trace_id"),
        doc.get("task")
            .and_then(|t| t.get("kind"))
            .map(value_text)
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "  started {}  ended {}  outcome {}  risk {}\n",
        g("started_at"),
        g("ended_at"),
        g("outcome"),
        g("risk_score")
    ));
    if let Some(p) = doc.get("principal").and_then(Value::as_object) {
        let parts: Vec<String> = p
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect();
        out.push_str(&format!("  principal {}\n", parts.join(" ")));
    }
    let steps = doc
        .get("steps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let depth_of = |s: &Value| -> usize {
        let mut d = 0;
        let mut cur = s.get("parent_step").and_then(Value::as_u64);
        while let Some(p) = cur {
            d += 1;
            if d > 64 {
                break;
            }
            cur = steps
                .get((p as usize).saturating_sub(1))
                .and_then(|x| x.get("parent_step"))
                .and_then(Value::as_u64);
        }
        d
    };
    for s in &steps {
        let indent = "  ".repeat(depth_of(s) + 1);
        let kind = s.get("kind").map(value_text).unwrap_or_default();
        let what = s
            .get("tool")
            .or_else(|| s.get("model"))
            .or_else(|| s.get("agent"))
            .or_else(|| s.get("decision"))
            .or_else(|| s.get("rule_id"))
            .or_else(|| s.get("source"))
            .or_else(|| s.get("store"))
            .map(value_text)
            .unwrap_or_default();
        let mut line = format!(
            "{indent}{:>3}. {kind} {what}",
            s.get("step_id").map(value_text).unwrap_or_default()
        );
        for f in [
            "result_status",
            "duration_ms",
            "input_tokens",
            "output_tokens",
            "reviewer",
            "action",
        ] {
            if let Some(v) = s.get(f) {
                line.push_str(&format!(" {f}={}", value_text(v)));
            }
        }
        if let Some(fl) = s
            .get("risk_flags")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            let names: Vec<String> = fl.iter().map(value_text).collect();
            line.push_str(&format!(" FLAGS[{}]", names.join(",")));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
