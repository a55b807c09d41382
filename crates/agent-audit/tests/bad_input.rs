//! Bad input gets a clear error or a documented truncation, never a panic,
//! and what was written before stays valid.

mod common;

use std::time::Duration;

use agent_audit::jcs::canonicalize;
use agent_audit::record::{Body, Decision, LlmCall, ModelInfo};
use agent_audit::verify::{VerifyOptions, verify_log};
use agent_audit::{AuditLog, ErrorKind, Event, PayloadPart, TraceId};
use common::*;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

fn records(dir: &std::path::Path) -> Vec<Value> {
    agent_audit::trace::load_records(dir, None)
        .unwrap()
        .into_iter()
        .map(|r| Value::Object(r.record))
        .collect()
}

#[test]
fn nan_and_infinity_are_typed_errors_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    let trace = TraceId::random();
    log.emit(tool_event(trace, None, 1)).unwrap();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let e = Event::new(Body::LlmCall(LlmCall {
            model: ModelInfo {
                name: "m".into(),
                ..Default::default()
            },
            cost_usd: Some(bad),
            ..Default::default()
        }));
        let err = log.emit(e).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidEvent);
        assert!(err.to_string().contains("finite"), "{err}");
    }
    // serde_json cannot even hold NaN in a payload: it becomes null there.
    assert_eq!(json!(f64::NAN), Value::Null);
    log.emit(tool_event(trace, None, 2)).unwrap();
    assert!(log.shutdown(Duration::from_secs(10)));
    let r = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(
        records(dir.path())
            .iter()
            .filter(|r| r["kind"] == "tool_call")
            .count(),
        2
    );
}

#[test]
fn fifty_megabyte_payload_is_truncated_and_hashed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    let trace = TraceId::random();
    let big = "x".repeat(50 * 1024 * 1024);
    let args = json!({"document": big});
    let expected = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonicalize(&args).unwrap()))
    );
    let e = tool_event(trace, None, 7).with_part(PayloadPart::Args, args);
    assert!(log.emit(e).unwrap());
    log.emit(tool_event(trace, None, 8)).unwrap();
    assert!(log.shutdown(Duration::from_secs(60)));
    let recs = records(dir.path());
    let rec = recs
        .iter()
        .find(|r| r["kind"] == "tool_call" && r["args_hash"] == expected.as_str())
        .expect("the big record with the hash of the whole value");
    let stored = &rec["payload"]["data"]["args"]["document"]["$truncated"];
    assert_eq!(stored["bytes"], 50 * 1024 * 1024);
    assert_eq!(stored["reason"], "size");
    let seg_size: u64 = std::fs::read_dir(dir.path().join(rec["stream_id"].as_str().unwrap()))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(seg_size < 1024 * 1024, "log is {seg_size} bytes");
    let r = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn deeply_nested_value_is_cut_at_the_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    // Built by hand: `json!` would clone the value recursively.
    let mut deep = Value::String("bottom".into());
    for _ in 0..10_000 {
        let mut m = Map::new();
        m.insert("next".into(), deep);
        deep = Value::Object(m);
    }
    let e = Event::new(Body::Decision(Decision {
        decision: "recurse".into(),
        ..Default::default()
    }))
    .with_part(PayloadPart::Reasoning, deep);
    assert!(log.emit(e).unwrap());
    assert!(log.shutdown(Duration::from_secs(30)));
    let recs = records(dir.path());
    let rec = recs.iter().find(|r| r["kind"] == "decision").unwrap();
    assert!(
        rec["reasoning_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(rec["payload"].to_string().contains("$truncated"));
    let r = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn big_integers_travel_as_strings() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    let e = tool_event(TraceId::random(), None, 1).with_part(
        PayloadPart::Result,
        json!({"counter": u64::MAX, "small": 42}),
    );
    log.emit(e).unwrap();
    assert!(log.shutdown(Duration::from_secs(10)));
    let recs = records(dir.path());
    let rec = recs.iter().find(|r| r["kind"] == "tool_call").unwrap();
    assert_eq!(
        rec["payload"]["data"]["result"]["counter"],
        "18446744073709551615"
    );
    assert_eq!(rec["payload"]["data"]["result"]["small"], 42);
    assert!(
        !verify_log(dir.path(), &VerifyOptions::default())
            .unwrap()
            .is_tampered()
    );
}

#[test]
fn keys_equal_after_unicode_normalisation_stay_distinct() {
    // "é" precomposed (NFC) and decomposed (NFD) are different keys to RFC
    // 8785, which does not normalise: both are kept and hashed as given.
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    let mut args = Map::new();
    args.insert("caf\u{e9}".into(), json!(1));
    args.insert("cafe\u{301}".into(), json!(2));
    let e =
        tool_event(TraceId::random(), None, 1).with_part(PayloadPart::Args, Value::Object(args));
    log.emit(e).unwrap();
    assert!(log.shutdown(Duration::from_secs(10)));
    let recs = records(dir.path());
    let rec = recs.iter().find(|r| r["kind"] == "tool_call").unwrap();
    let stored = rec["payload"]["data"]["args"].as_object().unwrap();
    assert_eq!(stored.len(), 2);
    assert!(
        !verify_log(dir.path(), &VerifyOptions::default())
            .unwrap()
            .is_tampered()
    );
}

#[test]
fn ingest_rejects_bad_lines_by_number_and_keeps_good_ones() {
    let input: Vec<u8> = [
        &br#"{"kind":"decision","decision":"first"}"#[..],
        b"{\"kind\":\"decision\",\"decision\":\"\xff\xfe\"}",
        br#"{"kind":"decision","decision":"a","decision":"b"}"#,
        br#"{"kind":"decision","decision":NaN}"#,
        br#"{"kind":"llm_call","model":{"name":"m"},"input_tokens":1e400}"#,
        br#"{"kind":"decision","decision":"last"}"#,
    ]
    .join(&b'\n');
    let (ok, rejected) = agent_audit::ingest::parse_event_lines(&input);
    assert_eq!(ok.len(), 2);
    let lines: Vec<usize> = rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 5]);
    assert!(
        rejected[0].reason.contains("UTF-8"),
        "{}",
        rejected[0].reason
    );
    assert!(
        rejected[1].reason.contains("duplicate"),
        "{}",
        rejected[1].reason
    );
}
