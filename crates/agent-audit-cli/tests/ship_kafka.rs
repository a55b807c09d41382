//! `agent-audit ship --to kafka://…` and `agent-audit collect --from
//! kafka://…` as processes against a real Kafka-protocol broker (Tansu):
//! a second collector in the same consumer group finds nothing left.
//! Needs feature `kafka` and the broker (`scripts/kafka-broker.sh`).
#![cfg(feature = "kafka")]

#[path = "../../agent-audit-ship/tests/common/mod.rs"]
mod common;
#[path = "../../agent-audit-ship/tests/common/kafka_broker.rs"]
mod kafka_broker;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use kafka_broker::KafkaBroker;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent-audit"))
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
        .args(["--durable", "central", "--until-idle", "6"])
        .output()
        .unwrap()
}

#[test]
fn ship_and_collect_through_kafka() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let broker = KafkaBroker::start(tmp.path());
    let url = broker.url();

    let agent = open_log(&log, &key, "acme", "standard_7y", 64 * 1024);
    for i in 0..500 {
        agent.emit(event(i)).unwrap();
    }
    assert!(agent.shutdown(Duration::from_secs(10)));
    let local = stream_lines(agent.stream_dir());

    let shipped = bin()
        .arg("ship")
        .arg(&log)
        .args(["--to", &url, "--partitions", "3", "--batch", "100"])
        .args(["--until-idle", "1"])
        .output()
        .unwrap();
    assert!(shipped.status.success(), "{shipped:?}");
    assert_eq!(stats(&shipped)["shipped"], local.len());
    assert!(log.join(".ship-cursor.kafka.json").is_file());

    let first = collect(&url, &out, &public);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(stats(&first)["committed"], local.len());
    let central = out.join("acme/standard_7y").join(agent.stream_id());
    assert!(stream_lines(&central) == local);

    let verified = bin()
        .arg("verify")
        .arg(out.join("acme/standard_7y"))
        .arg("--key")
        .arg(&public)
        .output()
        .unwrap();
    assert_eq!(verified.status.code(), Some(0), "{verified:?}");

    // The group's offsets were committed when the first collector stopped.
    let second = collect(&url, &out, &public);
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert_eq!(stats(&second)["received"], 0, "{second:?}");
}
