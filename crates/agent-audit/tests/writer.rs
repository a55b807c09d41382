//! The writer's guarantees on real files: loss is counted and recorded,
//! the queue is bounded, segments rotate, I/O errors are retried without
//! corrupting the log, checkpoints come by count, time and flush.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_audit::record::CaptureMode;
use agent_audit::verify::{VerifyOptions, verify_log};
use agent_audit::{AuditLog, ErrorKind, FsyncPolicy, Overflow, TraceId};
use common::*;
use serde_json::Value;

fn records(dir: &std::path::Path) -> Vec<Value> {
    agent_audit::trace::load_records(dir, None)
        .unwrap()
        .into_iter()
        .map(|r| Value::Object(r.record))
        .collect()
}

fn count_kind(recs: &[Value], kind: &str) -> usize {
    recs.iter().filter(|r| r["kind"] == kind).count()
}

fn assert_clean(dir: &std::path::Path) {
    let r = verify_log(dir, &VerifyOptions::default()).unwrap();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn full_queue_drops_without_blocking_and_records_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.queue_capacity = 4;
    let log = AuditLog::open(c).unwrap();
    let trace = TraceId::random();
    let mut queued = 0u64;
    let t = Instant::now();
    for i in 0..20_000 {
        if log.emit(tool_event(trace, None, i)).unwrap() {
            queued += 1;
        }
    }
    let emit_time = t.elapsed();
    assert!(log.shutdown(Duration::from_secs(30)));
    let stats = log.stats();
    assert!(stats.dropped > 0, "nothing was dropped: {stats:?}");
    assert_eq!(queued + stats.dropped, 20_000);
    let recs = records(dir.path());
    assert_eq!(count_kind(&recs, "tool_call") as u64, queued);
    let lost: u64 = recs
        .iter()
        .filter(|r| r["kind"] == "gap")
        .map(|r| r["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(lost, stats.dropped, "every lost event is in a gap record");
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "gap" && r["reason"] == "queue_full")
    );
    let end = recs.iter().find(|r| r["kind"] == "stream_end").unwrap();
    assert_eq!(end["lost"].as_u64().unwrap(), stats.dropped);
    assert_clean(dir.path());
    eprintln!(
        "20000 emits into a 4-slot queue took {emit_time:?}; dropped {}",
        stats.dropped
    );
}

#[test]
fn byte_bound_limits_queued_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.queue_max_bytes = 64 * 1024;
    let log = AuditLog::open(c).unwrap();
    let trace = TraceId::random();
    let mut max_seen = 0u64;
    for i in 0..5_000 {
        let e = tool_event(trace, None, i).with_part(
            agent_audit::PayloadPart::Input,
            Value::String("y".repeat(4096)),
        );
        let _ = log.emit(e).unwrap();
        max_seen = max_seen.max(log.stats().queued_bytes);
    }
    assert!(log.shutdown(Duration::from_secs(30)));
    // One event may exceed the bound when the queue is empty; never more.
    assert!(
        max_seen <= 64 * 1024 + 8 * 1024,
        "queued bytes reached {max_seen}"
    );
    assert!(log.stats().dropped > 0);
    assert_clean(dir.path());
}

#[test]
fn block_mode_waits_for_the_byte_bound_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.queue_max_bytes = 64 * 1024;
    c.overflow = Overflow::Block(Duration::from_secs(30));
    let log = AuditLog::open(c).unwrap();
    let trace = TraceId::random();
    let mut max_seen = 0u64;
    for i in 0..2_000 {
        let e = tool_event(trace, None, i).with_part(
            agent_audit::PayloadPart::Input,
            Value::String("y".repeat(4096)),
        );
        assert!(log.emit(e).unwrap(), "event {i} was not queued");
        max_seen = max_seen.max(log.stats().queued_bytes);
    }
    assert!(log.shutdown(Duration::from_secs(30)));
    assert!(
        max_seen <= 64 * 1024 + 8 * 1024,
        "queued bytes reached {max_seen}"
    );
    assert_eq!(log.stats().dropped, 0);
    assert_clean(dir.path());
}

#[test]
fn block_mode_waits_instead_of_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.queue_capacity = 2;
    c.overflow = Overflow::Block(Duration::from_secs(10));
    let log = AuditLog::open(c).unwrap();
    let trace = TraceId::random();
    for i in 0..3_000 {
        assert!(log.emit(tool_event(trace, None, i)).unwrap());
    }
    assert!(log.shutdown(Duration::from_secs(30)));
    assert_eq!(log.stats().dropped, 0);
    assert_eq!(count_kind(&records(dir.path()), "tool_call"), 3_000);
    assert_clean(dir.path());
}

#[test]
fn segments_rotate_by_size_and_chain_across_files() {
    // Always: synced on the writer thread after each write. Interval:
    // rotated-out segments and interval syncs on the fsync thread, early
    // ones every few MB. Never: left to the OS until the stream ends.
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = write_log(dir.path(), 3_000, |c| {
            c.segment_max_bytes = 64 * 1024;
            c.fsync = fsync;
        });
        let segs = agent_audit::reader::list_segments(&s).unwrap();
        assert!(segs.len() > 5, "{fsync:?}: {} segments", segs.len());
        for seg in &segs {
            let len = std::fs::metadata(seg).unwrap().len();
            assert!(len <= 64 * 1024, "{} is {len} bytes", seg.display());
            assert!(std::fs::read(seg).unwrap().ends_with(b"\n"));
        }
        assert_clean(dir.path());
        let recs = records(dir.path());
        assert_eq!(count_kind(&recs, "tool_call"), 3_000, "{fsync:?}");
        assert_eq!(count_kind(&recs, "stream_end"), 1, "{fsync:?}");
    }
}

#[test]
fn checkpoints_by_count_by_time_and_on_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_every = 100;
    c.checkpoint_interval = Duration::from_millis(50);
    let log = AuditLog::open(c).unwrap();
    let trace = TraceId::random();
    for i in 0..250 {
        log.emit(tool_event(trace, None, i)).unwrap();
    }
    assert!(log.flush(Duration::from_secs(10)));
    let after_flush = log.stats().checkpoints;
    // By count: 2 (at 100 and 200); on flush: 1; at open: 1.
    assert!(after_flush >= 4, "{after_flush}");
    // By time: one more record and no flush.
    log.emit(tool_event(trace, None, 999)).unwrap();
    let t = Instant::now();
    while log.stats().checkpoints == after_flush && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(log.stats().checkpoints, after_flush + 1);
    assert!(log.shutdown(Duration::from_secs(10)));
    assert_clean(dir.path());
}

#[test]
fn flush_makes_records_visible_and_verifiable_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    let trace = TraceId::random();
    for i in 0..10 {
        log.emit(tool_event(trace, None, i)).unwrap();
    }
    assert!(log.flush(Duration::from_secs(10)));
    let r = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(!r.is_tampered(), "{:#?}", r.findings);
    assert_eq!(count_kind(&records(dir.path()), "tool_call"), 10);
    assert!(log.shutdown(Duration::from_secs(10)));
    assert!(log.shutdown(Duration::from_secs(1)), "idempotent");
    let err = log.emit(tool_event(trace, None, 11)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[test]
fn per_record_signatures_verify() {
    // Enough records for batches signed on two threads, split over
    // segments (a batch's signatures are filled in before it is cut).
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 2_000, |c| {
        c.sign_records = true;
        c.segment_max_bytes = 64 * 1024;
    });
    assert!(agent_audit::reader::list_segments(&s).unwrap().len() > 5);
    let recs = records(dir.path());
    assert_eq!(count_kind(&recs, "tool_call"), 2_000);
    assert!(recs.iter().all(|r| r["sig"].as_str().is_some()));
    // The verifier checks every record's signature.
    assert_clean(dir.path());
}

#[test]
fn capture_modes_store_what_they_say() {
    for (mode, stored) in [
        (CaptureMode::Hash, false),
        (CaptureMode::Redacted, true),
        (CaptureMode::Raw, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3, |c| c.capture = mode);
        let recs = records(dir.path());
        let tool = recs.iter().find(|r| r["kind"] == "tool_call").unwrap();
        assert!(tool["args_hash"].as_str().unwrap().starts_with("sha256:"));
        assert!(tool["result_hash"].as_str().is_some());
        assert_eq!(tool.get("payload").is_some(), stored, "{mode:?}");
        assert_eq!(tool.get("payload_digest").is_some(), stored, "{mode:?}");
        assert_eq!(tool["args_redacted"], mode == CaptureMode::Hash);
        assert_clean(dir.path());
    }
}

#[test]
fn tenant_key_gives_keyed_hashes_and_hashed_user_ids() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 2, |c| {
        c.hashing_key = Some(b"tenant-secret".to_vec());
        c.hash_user_ids = true;
        c.principal.user_id = Some("u_abc".into());
    });
    let recs = records(dir.path());
    let tool = recs.iter().find(|r| r["kind"] == "tool_call").unwrap();
    assert!(
        tool["args_hash"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    assert!(tool["principal"].get("user_id").is_none());
    assert!(
        tool["principal"]["user_id_hash"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    assert!(
        !std::fs::read_to_string(
            agent_audit::reader::list_segments(
                &dir.path().join(tool["stream_id"].as_str().unwrap())
            )
            .unwrap()[0]
                .clone()
        )
        .unwrap()
        .contains("u_abc")
    );
    // Hashing user ids without a key is refused.
    let mut c = config(dir.path());
    c.hash_user_ids = true;
    assert_eq!(AuditLog::open(c).unwrap_err().kind(), ErrorKind::Config);
}

#[test]
fn each_writer_opens_its_own_stream() {
    let dir = tempfile::tempdir().unwrap();
    let a = AuditLog::open(config(dir.path())).unwrap();
    let b = AuditLog::open(config(dir.path())).unwrap();
    assert_ne!(a.stream_id(), b.stream_id());
    let trace = TraceId::random();
    a.emit(tool_event(trace, None, 1)).unwrap();
    b.emit(tool_event(trace, None, 2)).unwrap();
    assert!(a.shutdown(Duration::from_secs(10)) && b.shutdown(Duration::from_secs(10)));
    let r = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert_eq!(r.streams.len(), 2);
    assert!(r.findings.is_empty());
}

#[test]
fn unwritable_directory_fails_open_with_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = AuditLog::open(config(&file)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

const IO_CHILD_ENV: &str = "AGENT_AUDIT_IO_CHILD_DIR";

/// Child for the I/O error test: its file-size limit makes writes fail
/// (EFBIG) until the parent lifts it.
#[test]
fn io_error_child() {
    let Ok(dir) = std::env::var(IO_CHILD_ENV) else {
        return;
    };
    let log = AuditLog::open(config(std::path::Path::new(&dir))).unwrap();
    let trace = TraceId::random();
    for i in 0..2_000 {
        let _ = log.emit(tool_event(trace, None, i));
    }
    // Wait until writes have failed, then tell the parent.
    let t = Instant::now();
    while log.stats().io_errors == 0 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("io_errors {}", log.stats().io_errors);
    std::io::stdout().flush().unwrap();
    let ok = log.shutdown(Duration::from_secs(60));
    let s = log.stats();
    println!(
        "done ok={ok} written={} dropped={} io_errors={}",
        s.written, s.dropped, s.io_errors
    );
}

#[test]
fn io_errors_are_retried_and_the_log_stays_valid() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // SIGXFSZ ignored (inherited through exec) so a write past the limit
    // fails with EFBIG instead of killing the process; limit: 32 KiB.
    let script = format!(
        "trap '' XFSZ; ulimit -S -f 32; exec '{}' --exact io_error_child --nocapture --test-threads=1",
        exe.display()
    );
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .env(IO_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        // The harness prints "test io_error_child ... " before it.
        if line.contains("io_errors") {
            break;
        }
    }
    assert!(!line.trim().ends_with("io_errors 0"), "writes never failed");
    // The disk has room again.
    let st = Command::new("prlimit")
        .args(["--pid", &child.id().to_string(), "--fsize=unlimited"])
        .status()
        .unwrap();
    assert!(st.success());
    let mut rest = String::new();
    while out.read_line(&mut rest).unwrap() > 0 {
        if rest.contains("done") {
            break;
        }
    }
    child.wait().unwrap();
    let done = rest
        .lines()
        .find(|l| l.contains("done ok="))
        .unwrap()
        .to_string();
    assert!(done.contains("ok=true"), "{done}");
    let r = verify_log(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    let recs = records(dir.path());
    let written = count_kind(&recs, "tool_call") as u64;
    let lost: u64 = recs
        .iter()
        .filter(|r| r["kind"] == "gap")
        .map(|r| r["lost"].as_u64().unwrap())
        .sum();
    assert_eq!(
        written + lost,
        2_000,
        "every event is written or counted ({done})"
    );
    eprintln!("{done}; tool calls written {written}, lost {lost}");
}

#[test]
fn shutdown_reason_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    assert!(log.shutdown_with_reason(Duration::from_secs(10), agent_audit::ShutdownReason::Signal));
    let recs = records(dir.path());
    let end = recs.iter().find(|r| r["kind"] == "stream_end").unwrap();
    assert_eq!(end["reason"], "signal");
    assert_clean(dir.path());
}

/// A source that builds `tool_event(trace, None, i)` on the writer thread,
/// or, with `bad`, one the log refuses (a negative duration).
struct Source {
    trace: TraceId,
    i: u64,
    bad: bool,
    built_on: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl agent_audit::EventSource for Source {
    fn approx_bytes(&self) -> usize {
        1024
    }

    fn build(self: Box<Self>) -> agent_audit::Event {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.built_on.lock().unwrap().push(name);
        assert!(
            self.i != 3,
            "a source that panics loses its event, not the writer"
        );
        let mut e = tool_event(self.trace, None, self.i);
        if self.bad
            && let agent_audit::Body::ToolCall(c) = &mut e.body
        {
            c.outcome.duration_ms = Some(-1.0);
        }
        e
    }
}

#[test]
fn sources_are_built_on_the_writer_thread_and_bad_ones_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path())).unwrap();
    let trace = TraceId::random();
    let built_on = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..10 {
        let source = Source {
            trace,
            i,
            bad: i == 7,
            built_on: built_on.clone(),
        };
        assert!(log.emit_source(Box::new(source)).unwrap());
        // Interleaved with events built here: one order, one chain.
        assert!(log.emit(tool_event(trace, None, 100 + i)).unwrap());
    }
    assert!(log.flush(Duration::from_secs(10)));
    assert_eq!(log.stats().queued_bytes, 0);
    assert!(log.shutdown(Duration::from_secs(10)));
    let names = built_on.lock().unwrap().clone();
    assert_eq!(names.len(), 10);
    assert!(
        names.iter().all(|n| n.starts_with("agent-audit-wr")),
        "built on {names:?}"
    );
    let stats = log.stats();
    assert_eq!(stats.dropped, 2, "{stats:?}");
    let recs = records(dir.path());
    let calls: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "tool_call").collect();
    assert_eq!(calls.len(), 18);
    // In emit order: source i, then event 100 + i (source 7 refused, 3 panicked).
    let order: Vec<u64> = calls
        .iter()
        .map(|r| r["payload"]["data"]["args"]["params"][0].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (0..10)
        .flat_map(|i| [i, 100 + i])
        .filter(|&i| i != 7 && i != 3)
        .collect();
    assert_eq!(order, expected);
    let gap = recs
        .iter()
        .find(|r| r["kind"] == "gap")
        .expect("a gap record");
    assert_eq!(gap["lost"], 1);
    assert_eq!(gap["reason"], "invalid_event");
    assert_clean(dir.path());
    // Emitting into a closed log is misuse, as for built events.
    let late = Source {
        trace,
        i: 0,
        bad: false,
        built_on,
    };
    assert_eq!(
        log.emit_source(Box::new(late)).unwrap_err().kind(),
        ErrorKind::Closed
    );
}
