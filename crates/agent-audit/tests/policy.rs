//! The policy engine: loading and its errors, caller-thread gates,
//! writer-side verdicts, sequence / rate / baseline rules, scores.

use agent_audit::ids::{SpanId, TraceId};
use agent_audit::policy::{Action, PolicyEngine};
use agent_audit::record::{Body, ResultStatus, ToolCall, ToolInfo, TraceEnd};
use agent_audit::{ErrorKind, Event, PayloadPart};
use serde_json::{Value, json};

fn tool_event(name: &str, args: Value, trace: TraceId) -> Event {
    let body = Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: name.into(),
            ..ToolInfo::default()
        },
        ..ToolCall::default()
    });
    Event::new(body)
        .with_part(PayloadPart::Args, args)
        .in_trace(trace, SpanId::random(), None)
}

fn ids(v: &[agent_audit::policy::Verdict]) -> Vec<&str> {
    v.iter().map(|v| v.rule_id.as_str()).collect()
}

#[test]
fn builtin_pack_loads_and_flags_without_blocking() {
    let p = PolicyEngine::builtin().unwrap();
    assert_eq!(p.version(), "agent-audit-builtin/1");
    assert!(p.content_rules().len() >= 10);
    assert!(p.content_rules().iter().all(|r| !r.effect.action.is_gate()));
    // Nothing blocks by default, so every tool is on the fast path.
    assert!(p.gate("shell.exec").is_open());

    let t = TraceId::random();
    let mut e = tool_event(
        "shell.exec",
        json!({"command": "rm -rf /var/lib/postgresql"}),
        t,
    );
    let v = p.observe(&mut e);
    assert_eq!(ids(&v), ["destructive_shell"]);
    assert_eq!(e.risk.flags, ["destructive_operation"]);
    assert_eq!(e.risk.score, 50);

    let mut benign = tool_event("shell.exec", json!({"command": "rm build/output.log"}), t);
    assert!(p.observe(&mut benign).is_empty());
    assert_eq!(benign.risk.score, 0);
}

#[test]
fn a_blocking_rule_gates_only_the_tools_it_names() {
    let p = PolicyEngine::from_toml(
        r#"
version = "acme-7"
[[rule]]
id = "no_prod_drop"
description = "No DROP on the production database"
tools = ["db.*"]
regex = ['(?i)\bdrop\s+table\b']
flags = ["destructive_operation"]
score = 80
action = "block"
"#,
        "policy.toml",
    )
    .unwrap();
    assert_eq!(p.version(), "acme-7");
    assert!(p.gate("search_docs").is_open());
    let gate = p.gate("db.query");
    assert!(!gate.is_open());
    let t = TraceId::random();
    let v = p.pre_check(
        &gate,
        "db.query",
        Some(t),
        None,
        &json!({"sql": "DROP TABLE users"}),
    );
    let d = v.decision.clone().expect("blocked");
    assert_eq!(d.rule_id, "no_prod_drop");
    assert_eq!(d.effect.action, Action::Block);
    assert_eq!(v.risk().score, 80);
    let ok = p.pre_check(
        &gate,
        "db.query",
        Some(t),
        None,
        &json!({"sql": "SELECT 1"}),
    );
    assert!(ok.decision.is_none());

    // The blocked call's own event is not judged again on the writer.
    let mut e = tool_event("db.query", json!({"sql": "DROP TABLE users"}), t);
    if let Body::ToolCall(c) = &mut e.body {
        c.outcome.result_status = Some(ResultStatus::Blocked);
    }
    e.risk = v.risk();
    assert!(p.observe(&mut e).is_empty());
}

#[test]
fn sequence_fires_across_two_tools_in_one_trace_only() {
    let p = PolicyEngine::builtin().unwrap();
    let one = TraceId::random();
    let mut read = tool_event(
        "fs.read",
        json!({"path": "/home/app/.aws/credentials"}),
        one,
    );
    assert_eq!(ids(&p.observe(&mut read)), ["credential_files"]);
    let mut send = tool_event(
        "send_email",
        json!({"to": "x@example.com", "body": "hi"}),
        one,
    );
    assert_eq!(
        ids(&p.observe(&mut send)),
        ["external_message_tool", "credential_then_external_send"]
    );
    assert!(
        send.risk
            .flags
            .contains(&"possible_exfiltration".to_string())
    );

    // The same two steps in two traces: no sequence.
    let (a, b) = (TraceId::random(), TraceId::random());
    let mut read = tool_event("fs.read", json!({"path": "/home/app/.aws/credentials"}), a);
    p.observe(&mut read);
    let mut send = tool_event("send_email", json!({"to": "x@example.com"}), b);
    assert_eq!(ids(&p.observe(&mut send)), ["external_message_tool"]);
}

#[test]
fn a_blocking_sequence_is_decided_before_the_send_runs() {
    let p = PolicyEngine::from_toml(
        "version = \"v2\"\n[override.credential_then_external_send]\naction = \"block\"\n",
        "p.toml",
    )
    .unwrap();
    let t = TraceId::random();
    let read_gate = p.gate("fs.read");
    assert!(
        !read_gate.is_open(),
        "a credential read feeds a blocking sequence"
    );
    let span = SpanId::random();
    let pre = p.pre_check(
        &read_gate,
        "fs.read",
        Some(t),
        Some(span),
        &json!({"path": "~/.ssh/id_rsa"}),
    );
    assert!(pre.decision.is_none());
    // The writer sees the read later; it must not count it twice.
    let mut read = tool_event("fs.read", json!({"path": "~/.ssh/id_rsa"}), t);
    read.span_id = Some(span);
    p.observe(&mut read);
    let send_gate = p.gate("slack.post_message");
    let pre = p.pre_check(
        &send_gate,
        "slack.post_message",
        Some(t),
        None,
        &json!({"text": "done"}),
    );
    assert_eq!(
        pre.decision.unwrap().rule_id,
        "credential_then_external_send"
    );
    let other = p.pre_check(
        &send_gate,
        "slack.post_message",
        Some(TraceId::random()),
        None,
        &json!({"text": "done"}),
    );
    assert!(other.decision.is_none());
}

#[test]
fn rate_and_baseline_rules() {
    let p = PolicyEngine::from_toml(
        r#"
version = "v"
builtin = false
[[rate]]
id = "loop"
tools = ["search*"]
max_calls = 3
window_s = 60
flags = ["looping_agent"]
score = 20
[[baseline]]
id = "slow"
metric = "duration_ms"
factor = 5.0
min_samples = 5
flags = ["anomalous_duration"]
score = 10
"#,
        "p.toml",
    )
    .unwrap();
    let t = TraceId::random();
    let mut fired = Vec::new();
    for _ in 0..5 {
        let mut e = tool_event("search_web", json!({"q": "x"}), t);
        fired.push(!p.observe(&mut e).is_empty());
    }
    // Reported once per burst, when it crosses the limit.
    assert_eq!(fired, [false, false, false, true, false]);

    let t = TraceId::random();
    let timed = |ms: f64| {
        let mut e = tool_event("lookup", json!({}), t);
        if let Body::ToolCall(c) = &mut e.body {
            c.outcome.duration_ms = Some(ms);
        }
        e
    };
    for _ in 0..5 {
        assert!(p.observe(&mut timed(10.0)).is_empty());
    }
    assert!(p.observe(&mut timed(40.0)).is_empty());
    let v = p.observe(&mut timed(500.0));
    assert_eq!(ids(&v), ["slow"]);
}

#[test]
fn trace_end_carries_the_combined_score() {
    let p = PolicyEngine::builtin().unwrap();
    let t = TraceId::random();
    p.observe(&mut tool_event(
        "shell",
        json!({"cmd": "rm -rf /srv/data"}),
        t,
    )); // 50
    p.observe(&mut tool_event(
        "shell",
        json!({"cmd": "cat ~/.ssh/id_ed25519"}),
        t,
    )); // 50
    let mut end = Event::new(Body::TraceEnd(TraceEnd {
        outcome: "completed".into(),
        ..TraceEnd::default()
    }))
    .in_trace(t, SpanId::random(), None);
    p.observe(&mut end);
    assert_eq!(end.risk.score, 75);
    assert!(
        end.risk
            .flags
            .contains(&"destructive_operation".to_string())
    );
    assert!(end.risk.flags.contains(&"credential_access".to_string()));
}

fn load_err(text: &str) -> String {
    let e = PolicyEngine::from_toml(text, "bad.toml").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    e.message().to_string()
}

#[test]
fn bad_policy_files_name_the_file_line_and_reason() {
    let m = load_err("version = \"v\"\n\n[[rule]]\nid = \"x\"\nregex = ['(unclosed']\n");
    assert!(m.starts_with("bad.toml:5: bad regex"), "{m}");
    let m = load_err("version = \"v\"\n[[rule]]\nid = \"x\"\ntools = [\"a\"]\naction = \"blok\"\n");
    assert!(m.starts_with("bad.toml:5: unknown action \"blok\""), "{m}");
    let m = load_err(
        "version = \"v\"\n[[rule]]\nid = \"x\"\ntools = [\"a\"]\nkinds = [\"tool_call\"]\nin = [\"result\"]\nregex = ['x']\naction = \"block\"\n",
    );
    assert!(
        m.starts_with("bad.toml:") && m.contains("decided before the tool runs"),
        "{m}"
    );
    let m = load_err("version = \"v\"\nnot_a_key = 1\n");
    assert!(
        m.starts_with("bad.toml:2:") && m.contains("unknown field"),
        "{m}"
    );
    let m = load_err("[[rule]]\nid = \"x\"\ntools = [\"a\"]\n");
    assert!(m.contains("needs a `version`"), "{m}");
    let m = load_err("version = \"v\"\ndisable = [\"nope\"]\n");
    assert!(
        m.starts_with("bad.toml:2: disable: no built-in rule"),
        "{m}"
    );
    let m = load_err("version = \"v\"\n[[rule]]\nid = \"x\"\n");
    assert!(m.contains("no condition"), "{m}");
    let m =
        load_err("version = \"v\"\n[[tier]]\nname = \"t\"\nmin_score = 1\nrequire = [\"magic\"]\n");
    assert!(
        m.starts_with("bad.toml:5: unknown requirement \"magic\""),
        "{m}"
    );
    let m = load_err("version = \"v\"\nversion = \"w\"\n");
    assert!(m.starts_with("bad.toml:2:"), "{m}");
}

#[test]
fn users_disable_override_and_replace_builtin_rules() {
    let p = PolicyEngine::from_toml(
        r#"
version = "v"
disable = ["sql_injection"]
internal_hosts = ["*.corp.example"]
[override.destructive_sql]
action = "block"
score = 90
"#,
        "p.toml",
    )
    .unwrap();
    assert!(p.content_rules().iter().all(|r| r.id != "sql_injection"));
    let d = p
        .content_rules()
        .iter()
        .find(|r| r.id == "destructive_sql")
        .unwrap();
    assert_eq!((d.effect.action, d.effect.score), (Action::Block, 90));
    // Every tool can carry SQL, so every tool is gated now.
    let gate = p.gate("anything");
    let v = p.pre_check(
        &gate,
        "anything",
        None,
        None,
        &json!({"q": "TRUNCATE TABLE orders;"}),
    );
    assert_eq!(v.decision.unwrap().rule_id, "destructive_sql");

    let t = TraceId::random();
    let mut internal = tool_event(
        "http.request",
        json!({"method": "POST", "url": "https://wiki.corp.example/api"}),
        t,
    );
    assert!(p.observe(&mut internal).is_empty());
    let mut outside = tool_event(
        "http.request",
        json!({"method": "POST", "url": "https://hooks.zapier.com/x"}),
        t,
    );
    assert_eq!(ids(&p.observe(&mut outside)), ["external_http_write"]);
}

mod common;

#[test]
fn the_writer_records_verdicts_queues_reviews_alerts_and_scores() {
    use agent_audit::policy::score::{review_queue, score_log};
    use agent_audit::record::{HumanReview, TraceStart};
    use agent_audit::verify::{VerifyOptions, verify_log};
    use agent_audit::{AuditLog, PolicySource, Principal};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.policy = PolicySource::Engine(Arc::new(
        PolicyEngine::from_toml(
            r#"
version = "acme-2026.11"
[[rule]]
id = "refund_over_limit"
description = "Refunds are watched"
tools = ["payments.refund"]
flags = ["money_movement"]
score = 30
action = "alert"
"#,
            "p.toml",
        )
        .unwrap(),
    ));
    config.principal = Principal {
        tenant_id: Some("t1".into()),
        agent_id: Some("support-v3".into()),
        user_id: Some("u1".into()),
        ..Principal::default()
    };
    let log = AuditLog::open(config).unwrap();
    let alerts: Arc<Mutex<Vec<agent_audit::policy::Alert>>> = Arc::default();
    let sink = alerts.clone();
    log.set_alert_handler(Some(Arc::new(move |a: &agent_audit::policy::Alert| {
        sink.lock().unwrap().push(a.clone());
    })));

    let risky = TraceId::random();
    let root = SpanId::random();
    let start = Event::new(Body::TraceStart(TraceStart {
        task_kind: "refund".into(),
        ..TraceStart::default()
    }))
    .in_trace(risky, root, None);
    log.emit(start).unwrap();
    let mut refund = tool_event(
        "payments.refund",
        json!({"order": "o-1", "amount": 20}),
        risky,
    );
    refund.parent_span_id = Some(root);
    if let Body::ToolCall(c) = &mut refund.body {
        c.outcome.result_status = Some(ResultStatus::Ok);
        c.outcome.duration_ms = Some(12.0);
    }
    log.emit(refund).unwrap();
    let mut read = tool_event("fs.read", json!({"path": "/srv/app/.env"}), risky);
    read.parent_span_id = Some(root);
    log.emit(read).unwrap();
    let approval = Event::new(Body::HumanReview(HumanReview {
        decision: "approved".into(),
        reviewer: Some("ops@example.com".into()),
        ..HumanReview::default()
    }))
    .in_trace(risky, SpanId::random(), Some(root));
    log.emit(approval).unwrap();
    let mut send = tool_event(
        "send_email",
        json!({"to": "c@example.com", "body": "refunded"}),
        risky,
    );
    send.parent_span_id = Some(root);
    log.emit(send).unwrap();
    let end = Event::new(Body::TraceEnd(TraceEnd {
        outcome: "completed".into(),
        ..TraceEnd::default()
    }))
    .in_trace(risky, root, None);
    log.emit(end).unwrap();

    let quiet = TraceId::random();
    log.emit(tool_event("weather", json!({"city": "Oslo"}), quiet))
        .unwrap();
    assert!(log.shutdown(Duration::from_secs(10)));

    let report = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");

    // The alert reached the handler, off the writer thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alerts.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let got = alerts.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rule_id, "refund_over_limit");
    assert_eq!(got[0].tool.as_deref(), Some("payments.refund"));
    assert_eq!(got[0].trace_id, Some(risky.to_string()));

    // Reviews: the .env read and the sequence that followed it.
    let queue = review_queue(dir.path()).unwrap();
    let traces = queue["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0]["trace_id"], risky.to_string());
    let rules: Vec<&str> = traces[0]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["credential_files", "credential_then_external_send"]);

    // Every record carries the policy version.
    let records = agent_audit::trace::load_records(dir.path(), Some(&risky.to_string())).unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.record["policy_version"] == "acme-2026.11")
    );
    let end = records
        .iter()
        .find(|r| r.record["kind"] == "trace_end")
        .unwrap();
    // refund 30, .env 50, email 20 + sequence 60 (capped 80): 1 - .7*.5*.2 = 93.
    assert_eq!(end.record["risk"]["score"], 93);

    let policy = PolicyEngine::builtin().unwrap();
    let scores = score_log(dir.path(), None, &policy).unwrap();
    let by_id = |id: String| {
        scores["traces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trace_id"] == id)
            .unwrap()
            .clone()
    };
    let r = by_id(risky.to_string());
    assert_eq!(r["score"], 93);
    assert_eq!(r["tier"], "high");
    let unmet: Vec<&str> = r["unmet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["requirement"].as_str().unwrap())
        .collect();
    // The .env read and the email have no status/duration.
    assert_eq!(
        unmet,
        ["tool_status_and_duration", "tool_status_and_duration"],
        "{r:#}"
    );
    let q = by_id(quiet.to_string());
    assert_eq!(
        (q["score"].as_u64(), q["tier"].as_str()),
        (Some(0), Some("baseline"))
    );
    // A tool without status and duration, in a trace without trace_end.
    assert_eq!(q["compliant"], false);
}

#[test]
fn an_external_send_without_approval_is_an_unmet_requirement() {
    use agent_audit::policy::score::score_log;
    use agent_audit::record::HumanReview;
    use agent_audit::{AuditLog, Principal};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.principal = Principal {
        agent_id: Some("a".into()),
        user_id: Some("u".into()),
        ..Principal::default()
    };
    let log = AuditLog::open(config).unwrap();
    let t = TraceId::random();
    let done = |mut e: Event| {
        if let Body::ToolCall(c) = &mut e.body {
            c.outcome.result_status = Some(ResultStatus::Ok);
            c.outcome.duration_ms = Some(1.0);
        }
        e
    };
    // Credential read makes the trace high-tier.
    log.emit(done(tool_event(
        "fs.read",
        json!({"path": "~/.aws/credentials"}),
        t,
    )))
    .unwrap();
    let first = done(tool_event("send_email", json!({"to": "a@example.com"}), t));
    let approved_span = first.span_id;
    let review = Event::new(Body::HumanReview(HumanReview {
        decision: "approved".into(),
        reviewer: Some("lead".into()),
        subject_span_id: approved_span.map(|s| s.to_string()),
        ..HumanReview::default()
    }))
    .in_trace(t, SpanId::random(), None);
    let mut review = review;
    review.ts = agent_audit::Timestamp(first.ts.0 - 1);
    log.emit(review).unwrap();
    log.emit(first).unwrap();
    let second = done(tool_event("send_email", json!({"to": "b@example.com"}), t));
    let second_span = second.span_id.unwrap().to_string();
    log.emit(second).unwrap();
    log.emit(
        Event::new(Body::TraceEnd(TraceEnd {
            outcome: "completed".into(),
            ..TraceEnd::default()
        }))
        .in_trace(t, SpanId::random(), None),
    )
    .unwrap();
    assert!(log.shutdown(Duration::from_secs(10)));
    let report = score_log(
        dir.path(),
        Some(&t.to_string()),
        &PolicyEngine::builtin().unwrap(),
    )
    .unwrap();
    let tr = &report["traces"][0];
    assert_eq!(tr["tier"], "high");
    let unmet = tr["unmet"].as_array().unwrap();
    assert_eq!(unmet.len(), 1, "{tr:#}");
    assert_eq!(unmet[0]["requirement"], "approval_before_external_send");
    assert_eq!(unmet[0]["span_id"], second_span.as_str());
}

/// What a binding does around a tool call: check, then block, ask for
/// approval, or run; the log shows each outcome.
#[test]
fn block_and_approval_flows_as_a_binding_drives_them() {
    use agent_audit::trace::show_trace;
    use agent_audit::{AuditLog, PolicySource};
    use std::sync::Arc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.policy = PolicySource::Engine(Arc::new(
        PolicyEngine::from_toml(
            r#"
version = "flows-1"
[[rule]]
id = "no_drop"
tools = ["db.*"]
regex = ['(?i)\bdrop\s+table\b']
flags = ["destructive_operation"]
score = 80
action = "block"
[[rule]]
id = "refund_approval"
tools = ["payments.refund"]
flags = ["money_movement"]
score = 30
action = "require_approval"
"#,
            "p.toml",
        )
        .unwrap(),
    ));
    let log = AuditLog::open(config).unwrap();
    let policy = log.policy().unwrap().clone();
    let t = TraceId::random();
    let mut side_effects = Vec::new();

    // The binding's tool wrapper, in miniature.
    let call = |tool: &str,
                args: Value,
                approve: Option<bool>,
                side_effects: &mut Vec<String>|
     -> Result<(), String> {
        let gate = policy.gate(tool);
        let mut event = tool_event(tool, args.clone(), t);
        if !gate.is_open() {
            let pre = policy.pre_check(&gate, tool, Some(t), event.span_id, &args);
            if let Some(d) = &pre.decision {
                let allowed = d.effect.action == Action::RequireApproval && approve == Some(true);
                if d.effect.action == Action::RequireApproval {
                    let decision = if approve == Some(true) {
                        "approved"
                    } else {
                        "denied"
                    };
                    log.emit(PolicyEngine::review_event(
                        d,
                        &event,
                        decision,
                        Some("lead@example.com".into()),
                        Some("checked the order".into()),
                        12.0,
                    ))
                    .unwrap();
                }
                if !allowed {
                    let records = pre.blocked_records(event);
                    assert_eq!(records.len(), 2);
                    for r in records {
                        log.emit(r).unwrap();
                    }
                    return Err(d.rule_id.clone());
                }
            }
        }
        side_effects.push(tool.to_string());
        if let Body::ToolCall(c) = &mut event.body {
            c.outcome.result_status = Some(ResultStatus::Ok);
        }
        log.emit(event).unwrap();
        Ok(())
    };
    assert_eq!(
        call(
            "db.query",
            json!({"sql": "DROP TABLE orders"}),
            None,
            &mut side_effects
        ),
        Err("no_drop".into())
    );
    assert_eq!(
        call(
            "db.query",
            json!({"sql": "SELECT 1"}),
            None,
            &mut side_effects
        ),
        Ok(())
    );
    assert_eq!(
        call(
            "payments.refund",
            json!({"order": "o-1"}),
            Some(true),
            &mut side_effects
        ),
        Ok(())
    );
    assert_eq!(
        call(
            "payments.refund",
            json!({"order": "o-2"}),
            Some(false),
            &mut side_effects
        ),
        Err("refund_approval".into())
    );
    assert_eq!(side_effects, ["db.query", "payments.refund"]);
    assert!(log.shutdown(Duration::from_secs(10)));

    let report = agent_audit::verify::verify_log(dir.path(), &Default::default()).unwrap();
    assert_eq!(report.exit_code(), 0);
    let doc = show_trace(dir.path(), &t.to_string()).unwrap();
    let steps = doc["steps"].as_array().unwrap();
    let summary: Vec<(String, String)> = steps
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["result_status"]
                    .as_str()
                    .or(s["decision"].as_str())
                    .or(s["rule_id"].as_str())
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let expect = [
        ("tool_call", "blocked"),
        ("policy", "no_drop"),
        ("tool_call", "ok"),
        ("human_review", "approved"),
        ("tool_call", "ok"),
        ("policy", "refund_approval"),
        ("human_review", "denied"),
        ("tool_call", "blocked"),
        ("policy", "refund_approval"),
    ];
    let mut got: Vec<(String, String)> = summary.clone();
    got.sort();
    let mut want: Vec<(String, String)> = expect
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want, "{doc:#}");
    let blocked = steps
        .iter()
        .find(|s| s["result_status"] == "blocked")
        .unwrap();
    assert_eq!(blocked["risk_score"], 80);
}

/// A rate rule that blocks stops every call over the limit, not just the
/// one that crosses it (a flagging rate rule reports a burst once).
#[test]
fn a_blocking_rate_rule_stops_every_call_over_the_limit() {
    let p = PolicyEngine::from_toml(
        r#"
version = "v"
builtin = false
[[rate]]
id = "loop_block"
tools = ["search*"]
max_calls = 2
window_s = 60
flags = ["looping_agent"]
score = 20
action = "block"
"#,
        "p.toml",
    )
    .unwrap();
    let gate = p.gate("search_web");
    assert!(!gate.is_open());
    assert!(p.gate("lookup").is_open());
    let t = TraceId::random();
    let decided: Vec<bool> = (0..5)
        .map(|_| {
            p.pre_check(
                &gate,
                "search_web",
                Some(t),
                Some(SpanId::random()),
                &json!({}),
            )
            .decision
            .is_some()
        })
        .collect();
    assert_eq!(decided, [false, false, true, true, true]);
    // Another trace has its own count.
    let other = p.pre_check(
        &gate,
        "search_web",
        Some(TraceId::random()),
        Some(SpanId::random()),
        &json!({}),
    );
    assert!(other.decision.is_none());
}
