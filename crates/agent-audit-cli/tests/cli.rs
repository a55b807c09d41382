//! The `agent-audit` binary end to end: keygen, ingest, verify (exit codes
//! 0/1/2), traces, show, prove and verify-proof, erase.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent-audit"))
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        sin.write_all(input).unwrap();
    }
    drop(sin);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn events() -> String {
    let lines = [
        format!(
            r#"{{"kind":"trace_start","ts":"2026-04-16T13:44:37.000Z","trace_id":"{TRACE}","span_id":"00f067aa0ba902b7","principal":{{"tenant_id":"t_123","user_id":"u_abc","agent_id":"writer-v2"}},"task_kind":"customer_support_resolution","payload":{{"input":{{"ticket":"where is my order?"}}}}}}"#
        ),
        format!(
            r#"{{"kind":"llm_call","ts":"2026-04-16T13:44:38.000Z","trace_id":"{TRACE}","span_id":"00f067aa0ba902b8","parent_span_id":"00f067aa0ba902b7","model":{{"name":"claude-opus","provider":"anthropic"}},"input_tokens":1420,"output_tokens":312,"result_status":"ok","duration_ms":900}}"#
        ),
        format!(
            r#"{{"kind":"tool_call","ts":"2026-04-16T13:44:40.000Z","trace_id":"{TRACE}","span_id":"00f067aa0ba902b9","parent_span_id":"00f067aa0ba902b7","tool":{{"name":"db.query","version":"2.3.1"}},"result_status":"ok","duration_ms":84,"payload":{{"args":{{"sql":"select * from orders where email = 'jane@example.com'"}}}}}}"#
        ),
        r#"{"kind":"tool_call","bogus":true,"tool":{"name":"x"}}"#.to_string(),
        format!(
            r#"{{"kind":"tool_call","ts":"2026-04-16T13:44:45.000Z","trace_id":"{TRACE}","span_id":"00f067aa0ba902ba","parent_span_id":"00f067aa0ba902b7","tool":{{"name":"email.send"}},"result_status":"ok","duration_ms":210,"risk":{{"flags":["sends_external_message"],"score":12}}}}"#
        ),
        "this is not json".to_string(),
        format!(
            r#"{{"kind":"trace_end","ts":"2026-04-16T13:44:52.000Z","trace_id":"{TRACE}","span_id":"00f067aa0ba902b7","outcome":"completed","risk":{{"flags":[],"score":12}}}}"#
        ),
    ];
    lines.join("\n") + "\n"
}

fn ingest(log: &Path, key: &Path) -> Output {
    run(
        &[
            "ingest",
            log.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        Some(events().as_bytes()),
    )
}

#[test]
fn keygen_ingest_verify_traces_show_prove() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let out = run(&["keygen", "--out", key.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pubkey = dir.path().join("k.pub.pem");
    assert!(pubkey.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let log = dir.path().join("log");
    let out = ingest(&log, &key);
    assert_eq!(out.status.code(), Some(1), "some lines were rejected");
    let err = text(&out.stderr);
    assert!(
        err.contains("line 4: rejected: unknown field \"bogus\""),
        "{err}"
    );
    assert!(err.contains("line 6: rejected:"), "{err}");
    assert!(err.contains("ingested 5 event(s)"), "{err}");

    let logs = log.to_str().unwrap();
    let out = run(&["verify", logs, "--key", pubkey.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("OK: "));
    let out = run(&["verify", logs, "--json"], None);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["streams"][0]["status"], "clean");

    let out = run(&["traces", logs, "--flag", "sends_external_message"], None);
    assert!(text(&out.stdout).contains(TRACE), "{}", text(&out.stdout));
    let out = run(&["traces", logs, "--flag", "no_such_flag"], None);
    assert!(text(&out.stdout).trim().is_empty());
    let out = run(&["traces", logs, "--since", "2026-05-01T00:00:00Z"], None);
    assert!(text(&out.stdout).trim().is_empty());

    let out = run(&["show", logs, TRACE, "--json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["trace_id"], TRACE);
    assert_eq!(doc["task"]["kind"], "customer_support_resolution");
    assert!(
        doc["task"]["input_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(doc["principal"]["tenant_id"], "t_123");
    assert_eq!(doc["outcome"], "completed");
    // The caller's 12 plus the built-in external_message_tool rule's 20.
    assert_eq!(doc["risk_score"], 32);
    assert_eq!(doc["retention_class"], "standard_7y");
    let steps = doc["steps"].as_array().unwrap();
    // Three steps and the policy verdict on the email send, its child.
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[3]["kind"], "policy");
    assert_eq!(steps[3]["rule_id"], "external_message_tool");
    assert_eq!(steps[3]["tool"], "email.send");
    assert_eq!(steps[3]["parent_step"], steps[2]["step_id"]);
    assert_eq!(steps[2]["risk_score"], 32);
    assert_eq!(steps[0]["kind"], "llm_call");
    assert_eq!(steps[0]["model"], "claude-opus");
    assert_eq!(steps[0]["input_tokens"], 1420);
    assert_eq!(steps[1]["tool"], "db.query");
    assert!(
        steps[1]["args_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(steps[2]["risk_flags"][0], "sends_external_message");
    let out = run(&["show", logs, TRACE], None);
    assert!(text(&out.stdout).contains("db.query"));
    let out = run(&["show", logs, "00000000000000000000000000000001"], None);
    assert_eq!(out.status.code(), Some(2));

    // Inclusion proof of the db.query record, checked offline.
    let event_id = steps[1]["event_id"].as_str().unwrap();
    let out = run(&["prove", logs, event_id], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let proof_path = dir.path().join("proof.json");
    std::fs::write(&proof_path, &out.stdout).unwrap();
    let out = run(
        &[
            "verify-proof",
            proof_path.to_str().unwrap(),
            "--key",
            pubkey.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // A doctored proof fails.
    let mut bundle: Value = serde_json::from_slice(&std::fs::read(&proof_path).unwrap()).unwrap();
    bundle["record"]["duration_ms"] = Value::from(1);
    std::fs::write(&proof_path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let out = run(&["verify-proof", proof_path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("INVALID"));

    // Erasure keeps the log valid.
    let out = run(&["erase", logs, event_id], None);
    assert!(
        text(&out.stdout).contains("erased 1"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["verify", logs], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("ErasedPayload"));
}

#[test]
fn verify_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    run(&["keygen", "--out", key.to_str().unwrap()], None);
    let log = dir.path().join("log");
    ingest(&log, &key);
    // 2: not a log.
    let out = run(
        &["verify", dir.path().join("nothing").to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    // 1: a changed byte.
    let stream = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let seg = stream.join("seg-000000.jsonl");
    let s = std::fs::read_to_string(&seg).unwrap();
    std::fs::write(
        &seg,
        s.replacen("\"duration_ms\":84", "\"duration_ms\":85", 1),
    )
    .unwrap();
    let out = run(&["verify", log.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("HashMismatch"));
    assert!(text(&out.stdout).contains("seg-000000.jsonl@"));
    // 2: a missing key file is unusable input.
    let out = run(
        &["verify", log.to_str().unwrap(), "--key", "/nonexistent.pem"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ingest_with_a_bad_key_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let out = ingest(&dir.path().join("log"), &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.pem"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn review_queue_score_and_a_bad_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let logs = log.to_str().unwrap();
    let t = "5bf92f3577b34da6a3ce929d0e0e4736";
    let events = format!(
        r##"{{"kind":"trace_start","trace_id":"{t}","span_id":"10f067aa0ba902b7","principal":{{"user_id":"u1","agent_id":"ops-v1"}},"task_kind":"cleanup"}}
{{"kind":"tool_call","trace_id":"{t}","span_id":"10f067aa0ba902b8","parent_span_id":"10f067aa0ba902b7","tool":{{"name":"fs.read"}},"result_status":"ok","duration_ms":3,"payload":{{"args":{{"path":"/srv/app/.env"}}}}}}
{{"kind":"tool_call","trace_id":"{t}","span_id":"10f067aa0ba902b9","parent_span_id":"10f067aa0ba902b7","tool":{{"name":"slack.post_message"}},"result_status":"ok","duration_ms":40,"payload":{{"args":{{"channel":"#ext","text":"done"}}}}}}
{{"kind":"trace_end","trace_id":"{t}","span_id":"10f067aa0ba902b7","outcome":"completed"}}
"##
    );
    let out = run(&["ingest", logs], Some(events.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = run(&["review", logs], None);
    let shown = text(&out.stdout);
    assert!(shown.contains(t), "{shown}");
    assert!(shown.contains("credential_files") && shown.contains("credential_then_external_send"));
    let out = run(&["review", logs, "--json"], None);
    let q: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(q["traces"][0]["verdicts"][1]["tool"], "slack.post_message");

    let out = run(&["score", logs, t, "--json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tr = &s["traces"][0];
    assert_eq!(tr["tier"], "high");
    // .env read 50; post 20 + sequence 60 = 80: 1 - 0.5 * 0.2 = 90.
    assert_eq!(tr["score"], 90);
    assert_eq!(
        tr["unmet"][0]["requirement"],
        "approval_before_external_send"
    );
    assert_eq!(tr["unmet"][0]["span_id"], "10f067aa0ba902b9");
    let out = run(&["score", logs], None);
    assert!(
        text(&out.stdout).contains("tier high")
            && text(&out.stdout).contains("unmet approval_before_external_send")
    );
    let out = run(&["show", logs, t, "--json"], None);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["risk_score"], 90);

    let bad = dir.path().join("policy.toml");
    std::fs::write(
        &bad,
        "version = \"1\"\n[[rule]]\nid = \"r\"\ntools = [\"x\"]\naction = \"explode\"\n",
    )
    .unwrap();
    let out = run(
        &["ingest", logs, "--policy", bad.to_str().unwrap()],
        Some(events.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("policy.toml:5: unknown action \"explode\""),
        "{err}"
    );
}
