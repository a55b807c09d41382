//! A writer killed with SIGKILL at full speed: the log verifies up to the
//! last complete record, the torn line and the open stream are reported as
//! such (not as tampering), and a new writer continues in a new stream.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_audit::verify::{FindingCode, Severity, StreamStatus, VerifyOptions, verify_log};
use agent_audit::{AuditLog, TraceId};
use common::*;

const CHILD_ENV: &str = "AGENT_AUDIT_CRASH_CHILD_DIR";

/// Runs only as the child: writes as fast as it can until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut c = config(std::path::Path::new(&dir));
    c.checkpoint_every = 500;
    c.checkpoint_interval = Duration::from_millis(20);
    c.segment_max_bytes = 256 * 1024;
    let log = AuditLog::open(c).unwrap();
    let trace = TraceId::random();
    let mut i = 0u64;
    loop {
        let _ = log.emit(tool_event(trace, None, i));
        i += 1;
        if i == 20_000 {
            println!("running");
        }
        if i.is_multiple_of(64) {
            std::thread::yield_now();
        }
    }
}

#[test]
fn sigkill_mid_write_leaves_a_verifiable_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let started = Instant::now();
    while !line.contains("running") {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 || started.elapsed() > Duration::from_secs(60) {
            panic!("child did not start");
        }
    }
    // Let it write through a few rotations and checkpoints (however busy
    // the machine is), then kill it mid-write.
    let written = || -> u64 {
        walk_files(dir.path())
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    };
    while written() < 4 * 256 * 1024 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the child writes too slowly"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let r = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    let tampered: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Tampered)
        .collect();
    assert!(tampered.is_empty(), "{tampered:#?}");
    assert_eq!(r.streams.len(), 1);
    assert!(r.records > 500, "only {} records", r.records);
    assert_eq!(r.with_code(FindingCode::OpenStream).len(), 1);
    assert!(matches!(
        r.streams[0].status,
        StreamStatus::Open | StreamStatus::Truncated
    ));
    assert!(r.streams[0].checkpoints_verified > 1);
    eprintln!(
        "after SIGKILL: {} records, {} checkpoints verified, torn tail: {}",
        r.records,
        r.streams[0].checkpoints_verified,
        !r.with_code(FindingCode::TornTail).is_empty()
    );

    // A new writer continues in a new stream of the same directory.
    let log = AuditLog::open(config(dir.path())).unwrap();
    let trace = TraceId::random();
    for i in 0..100 {
        log.emit(tool_event(trace, None, i)).unwrap();
    }
    assert!(log.shutdown(Duration::from_secs(10)));
    let r2 = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert_eq!(r2.streams.len(), 2);
    assert!(!r2.is_tampered());
    assert_eq!(r2.streams[1].status, StreamStatus::Clean);
    assert!(r2.streams[0].stream_id < r2.streams[1].stream_id);
}

#[test]
fn torn_write_is_detected_after_kill_during_a_line() {
    // Make a real torn line: a log whose last write was cut mid-record.
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 30, |_| {});
    let seg = segment(&s);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"{\"event_id\":\"01a2");
    std::fs::write(&seg, bytes).unwrap();
    let r = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(!r.is_tampered(), "{:#?}", r.findings);
    assert_eq!(r.with_code(FindingCode::TornTail).len(), 1);
    let f = r.with_code(FindingCode::TornTail)[0];
    assert!(f.offset.unwrap() > 0);
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
