//! `agent-audit ship` and `agent-audit collect` as processes against a
//! real nats-server: the shipper killed with SIGKILL mid-export resumes
//! from its cursor, a restarted collector resumes from its durable
//! consumer, and records sent again after JetStream's duplicate window
//! are dropped by the collector.
#![cfg(feature = "ship")]

#[path = "../../agent-audit-ship/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use agent_audit_ship::cursor::Cursor;
use common::*;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent-audit"))
}

fn spawn_ship(log: &Path, url: &str, extra: &[&str]) -> Child {
    bin()
        .arg("ship")
        .arg(log)
        .args(["--to", url, "--duplicate-window", "1", "--batch", "64"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stats(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {text:?} stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn collect(url: &str, out: &Path, public: &Path) -> Output {
    bin()
        .args(["collect", "--from", url, "--to"])
        .arg(out)
        .arg("--trust")
        .arg(public)
        .args(["--until-idle", "1.5"])
        .output()
        .unwrap()
}

#[test]
fn sigkilled_shipper_resumes_from_its_cursor_and_the_collector_drops_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let nats = NatsServer::start(tmp.path());
    let url = nats.url();

    // The agent writes steadily while the shipper runs.
    let agent = open_log(&log, &key, "acme", "standard_7y", 64 * 1024);
    let writer = {
        let agent = agent.clone();
        std::thread::spawn(move || {
            for i in 0..3000 {
                agent.emit(event(i)).unwrap();
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
        })
    };
    let cursor_path = Cursor::path(&log, "nats");
    let shipped = || {
        Cursor::load(&cursor_path, "nats")
            .unwrap()
            .streams
            .values()
            .map(|c| c.next_seq)
            .sum::<u64>()
    };

    let mut child = spawn_ship(&log, &url, &[]);
    wait_for(20, "the shipper to make progress", || shipped() > 200);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = shipped();

    writer.join().unwrap();
    assert!(agent.shutdown(Duration::from_secs(10)));
    let local = stream_lines(agent.stream_dir());
    assert!(
        (at_kill as usize) < local.len(),
        "the shipper finished before it was killed"
    );

    // Restarted, it resumes from the cursor and catches up.
    let out1 = spawn_ship(&log, &url, &["--until-idle", "1"])
        .wait_with_output()
        .unwrap();
    assert!(out1.status.success(), "{out1:?}");
    let s = stats(&out1);
    assert_eq!(
        s["shipped"].as_u64().unwrap() + at_kill,
        local.len() as u64,
        "resumed from the cursor: nothing resent, nothing lost ({s})"
    );

    // Collect half-way is not possible to time exactly; collect, then
    // check, then collect again after a second export of everything.
    let c1 = collect(&url, &out, &public);
    assert_eq!(c1.status.code(), Some(0), "{c1:?}");
    let s1 = stats(&c1);
    assert_eq!(
        s1["committed"].as_u64().unwrap(),
        local.len() as u64,
        "{s1}"
    );
    let central_dir = out.join("acme/standard_7y").join(agent.stream_id());
    assert!(stream_lines(&central_dir) == local, "central log differs");

    // Everything again, with a fresh cursor, after JetStream's duplicate
    // window (1 s) has passed: JetStream stores the copies, the collector
    // (resuming from its durable consumer) drops every one.
    std::thread::sleep(Duration::from_millis(1200));
    std::fs::remove_file(&cursor_path).unwrap();
    let out2 = spawn_ship(&log, &url, &["--until-idle", "1"])
        .wait_with_output()
        .unwrap();
    assert!(out2.status.success(), "{out2:?}");
    assert_eq!(
        stats(&out2)["shipped"].as_u64().unwrap(),
        local.len() as u64
    );
    let c2 = collect(&url, &out, &public);
    assert_eq!(c2.status.code(), Some(0), "{c2:?}");
    let s2 = stats(&c2);
    assert_eq!(s2["received"].as_u64().unwrap(), local.len() as u64, "{s2}");
    assert_eq!(
        s2["duplicates"].as_u64().unwrap(),
        local.len() as u64,
        "{s2}"
    );
    assert_eq!(s2["committed"].as_u64().unwrap(), 0, "{s2}");
    assert!(stream_lines(&central_dir) == local, "central log changed");

    // And the central log verifies with the command line.
    let v = bin()
        .arg("verify")
        .arg(out.join("acme/standard_7y"))
        .arg("--key")
        .arg(&public)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0), "{v:?}");
}

#[test]
fn ship_rejects_an_unsupported_url_and_collect_requires_a_trusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bin()
        .arg("ship")
        .arg(tmp.path())
        .args(["--to", "ftp://127.0.0.1:21"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nats://"));
    let o = bin()
        .args(["collect", "--from", "nats://127.0.0.1:1", "--to"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--trust"));
}

#[test]
fn ship_and_collect_stop_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, public) = key(tmp.path(), "writer");
    let nats = NatsServer::start(tmp.path());
    let log = tmp.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let children = [
        spawn_ship(&log, &nats.url(), &[]),
        bin()
            .args(["collect", "--from", &nats.url(), "--to"])
            .arg(tmp.path().join("central"))
            .arg("--trust")
            .arg(&public)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(700));
    for child in children {
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        stats(&out);
    }
}

/// The attack a writer's own signatures cannot catch: the host's log is
/// cut back to an earlier checkpoint, and that checkpoint put in
/// head.json. Every record left is validly signed, so a plain verify sees
/// only an open stream; verified against the collector's co-signatures of
/// the checkpoints it accepted, the cut shows.
#[test]
fn a_tail_cut_after_shipping_is_caught_by_the_witness_cosignatures() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let (witness_key, witness_public) = common::key(tmp.path(), "witness");
    let nats = NatsServer::start(tmp.path());
    let url = nats.url();

    let agent = open_log(&log, &key, "acme", "standard_7y", 1 << 20);
    for i in 0..400 {
        agent.emit(event(i)).unwrap();
    }
    assert!(agent.shutdown(Duration::from_secs(10)));
    let shipped = spawn_ship(&log, &url, &["--until-idle", "1"])
        .wait_with_output()
        .unwrap();
    assert_eq!(shipped.status.code(), Some(0), "{shipped:?}");
    let collected = bin()
        .args(["collect", "--from", &url, "--to"])
        .arg(&out)
        .arg("--trust")
        .arg(&public)
        .arg("--witness-key")
        .arg(&witness_key)
        .args(["--until-idle", "1.5"])
        .output()
        .unwrap();
    assert_eq!(collected.status.code(), Some(0), "{collected:?}");

    let verify = |extra: &[&std::ffi::OsStr]| {
        let out = bin()
            .arg("verify")
            .arg(&log)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), stats(&out))
    };
    let witness_args = [
        std::ffi::OsStr::new("--witness"),
        out.as_os_str(),
        std::ffi::OsStr::new("--witness-key"),
        witness_public.as_os_str(),
    ];
    // Intact: clean with and without the witness.
    assert_eq!(verify(&[]).0, Some(0));
    let (code, report) = verify(&witness_args);
    assert_eq!(code, Some(0), "{report}");

    // Cut the host's stream back to its third checkpoint and make that
    // the signed head.
    let stream = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let lines = stream_lines(&stream);
    let checkpoints: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| serde_json::from_slice::<Value>(l).unwrap()["kind"] == "checkpoint")
        .map(|(i, _)| i)
        .collect();
    assert!(checkpoints.len() > 4, "{} checkpoints", checkpoints.len());
    let keep = checkpoints[2] + 1;
    let mut text = Vec::new();
    for l in &lines[..keep] {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    for seg in std::fs::read_dir(&stream).unwrap() {
        let p = seg.unwrap().path();
        if p.file_name().unwrap().to_str().unwrap().starts_with("seg-") {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::write(stream.join("seg-000000.jsonl"), &text).unwrap();
    let mut head = lines[keep - 1].clone();
    head.push(b'\n');
    std::fs::write(stream.join("head.json"), head).unwrap();

    // A plain verify cannot tell: an open stream, nothing tampered.
    let (code, report) = verify(&[]);
    assert_eq!(code, Some(0), "{report}");
    // Against the witness: the cut is found.
    let (code, report) = verify(&witness_args);
    assert_eq!(code, Some(1), "{report}");
    let findings = report["findings"].as_array().unwrap();
    let cut = findings
        .iter()
        .find(|f| f["code"] == "cut_tail")
        .unwrap_or_else(|| panic!("no cut_tail in {report}"));
    assert!(
        cut["message"].as_str().unwrap().contains("witness"),
        "{cut}"
    );

    // A forged witness file (another key) is refused, not trusted.
    let (_, other_public) = common::key(tmp.path(), "other");
    let forged = bin()
        .arg("verify")
        .arg(&log)
        .arg("--witness")
        .arg(&out)
        .arg("--witness-key")
        .arg(&other_public)
        .output()
        .unwrap();
    assert_eq!(forged.status.code(), Some(2), "{forged:?}");
}
