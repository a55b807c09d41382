//! Shipping through a real Kafka-protocol broker (Tansu, SQLite store) and
//! collecting into a central log: broker killed mid-export and restarted
//! while the agents write and the collector consumes, a flipped byte, an
//! untrusted key, a restarted collector resuming from its committed
//! offsets. Needs feature `kafka` (librdkafka) and the broker
//! (`scripts/kafka-broker.sh`; scripts/test.sh runs both).
#![cfg(feature = "kafka")]

mod common;
#[path = "common/kafka_broker.rs"]
mod kafka_broker;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_audit::keys::PublicKey;
use agent_audit::verify::{StreamStatus, VerifyOptions, verify_log};
use agent_audit_ship::cursor::Cursor;
use agent_audit_ship::exporter::{Exporter, Outgoing};
use agent_audit_ship::{
    CollectOptions, CollectStats, KafkaConfig, KafkaExporter, KafkaSource, ShipOptions, collect,
    ship,
};
use common::*;
use kafka_broker::KafkaBroker;

fn config(broker: &KafkaBroker) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(broker.brokers());
    cfg.partitions = 3;
    cfg
}

fn collect_opts(out: &Path, trusted: &[PublicKey], until_idle: Option<Duration>) -> CollectOptions {
    let mut opts = CollectOptions::new(out);
    opts.trusted_keys = trusted.to_vec();
    opts.until_idle = until_idle;
    opts.report_errors = false;
    opts.backoff_max = Duration::from_millis(500);
    opts
}

fn collect_until_idle(
    broker: &KafkaBroker,
    out: &Path,
    trusted: &[PublicKey],
    group: &str,
) -> CollectStats {
    let mut source = KafkaSource::new(config(broker), group).unwrap();
    // Long enough for the consumer to join its group.
    let opts = collect_opts(out, trusted, Some(Duration::from_secs(6)));
    collect(&mut source, &opts, &AtomicBool::new(false)).unwrap()
}

fn ship_opts(until_idle: Option<Duration>) -> ShipOptions {
    ShipOptions {
        poll: Duration::from_millis(20),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        until_idle,
        report_errors: false,
        ..ShipOptions::default()
    }
}

fn count_lines(dir: &Path) -> usize {
    if dir.is_dir() {
        stream_lines(dir).len()
    } else {
        0
    }
}

#[test]
fn broker_killed_mid_export_loses_nothing_and_the_central_log_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let trusted = vec![PublicKey::load(&public).unwrap()];
    let mut broker = KafkaBroker::start(tmp.path());

    // Two agents (two streams), different tenants and retention classes,
    // small segments so the tailer crosses rotations.
    let acme = open_log(&log, &key, "acme", "standard_7y", 16 * 1024);
    let globex = open_log(&log, &key, "globex corp", "short_90d", 16 * 1024);

    let stop = Arc::new(AtomicBool::new(false));
    let shipper = {
        let (log, stop) = (log.clone(), stop.clone());
        let mut cfg = config(&broker);
        // Records are waited for 1 s, well below the outage, so the retry
        // path is taken (not just a slow ack).
        cfg.timeout = Duration::from_secs(1);
        std::thread::spawn(move || {
            let mut exporter = KafkaExporter::new(cfg).unwrap();
            ship(&log, &mut exporter, &ship_opts(None), &stop).unwrap()
        })
    };
    // The collector consumes all along, across the outage.
    let stop_collector = Arc::new(AtomicBool::new(false));
    let collector = {
        let (out, trusted, stop) = (out.clone(), trusted.clone(), stop_collector.clone());
        let mut cfg = config(&broker);
        cfg.timeout = Duration::from_secs(2);
        std::thread::spawn(move || {
            let mut source = KafkaSource::new(cfg, "central").unwrap();
            collect(&mut source, &collect_opts(&out, &trusted, None), &stop).unwrap()
        })
    };
    let cursor_path = Cursor::path(&log, "kafka");
    let shipped = |id: &str| {
        Cursor::load(&cursor_path, "kafka")
            .unwrap()
            .streams
            .get(id)
            .map_or(0, |c| c.next_seq)
    };

    let mut n = 0;
    for _ in 0..300 {
        acme.emit(event(n)).unwrap();
        globex.emit(event(n)).unwrap();
        n += 1;
    }
    assert!(acme.flush(Duration::from_secs(5)) && globex.flush(Duration::from_secs(5)));
    wait_for(60, "records to be shipped", || {
        shipped(acme.stream_id()) > 100 && shipped(globex.stream_id()) > 100
    });

    // The broker goes away mid-export; the agents keep writing.
    broker.stop();
    let before = (shipped(acme.stream_id()), shipped(globex.stream_id()));
    let t = Instant::now();
    for _ in 0..400 {
        assert!(acme.emit(event(n)).unwrap());
        assert!(globex.emit(event(n)).unwrap());
        n += 1;
    }
    let emit_time = t.elapsed();
    assert!(acme.flush(Duration::from_secs(5)) && globex.flush(Duration::from_secs(5)));
    assert_eq!(acme.stats().dropped + globex.stats().dropped, 0);
    assert!(
        emit_time < Duration::from_secs(2),
        "800 emits took {emit_time:?} with the broker down"
    );
    // A batch in flight when the broker went may still have been
    // acknowledged; after librdkafka's timeout nothing more can be.
    std::thread::sleep(Duration::from_millis(3500));
    let during = (shipped(acme.stream_id()), shipped(globex.stream_id()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        during,
        (shipped(acme.stream_id()), shipped(globex.stream_id())),
        "acknowledged while the broker was down"
    );
    assert!(during.0 < 1000 && during.1 < 1000, "{before:?} {during:?}");

    // Back up, same store: shipper and collector resume by themselves.
    broker.launch();
    for _ in 0..100 {
        acme.emit(event(n)).unwrap();
        globex.emit(event(n)).unwrap();
        n += 1;
    }
    assert!(acme.shutdown(Duration::from_secs(10)));
    assert!(globex.shutdown(Duration::from_secs(10)));
    wait_for(90, "every stream shipped to its end", || {
        let c = Cursor::load(&cursor_path, "kafka").unwrap();
        c.streams.len() == 2 && c.streams.values().all(|s| s.closed)
    });
    stop.store(true, Ordering::Release);
    let stats = shipper.join().unwrap();
    assert!(stats.failures > 0, "the outage was not noticed: {stats:?}");

    let central_dirs = [
        (&acme, out.join("acme/standard_7y").join(acme.stream_id())),
        (
            &globex,
            out.join("globex~20corp/short_90d").join(globex.stream_id()),
        ),
    ];
    wait_for(90, "the collector to write every record", || {
        central_dirs
            .iter()
            .all(|(l, d)| count_lines(d) == stream_lines(l.stream_dir()).len())
    });
    stop_collector.store(true, Ordering::Release);
    let stats = collector.join().unwrap();
    assert_eq!(stats.quarantined_streams, 0, "{stats:?}");

    // Every record exactly once, in order, byte for byte.
    for (log_handle, central_dir) in &central_dirs {
        let local = stream_lines(log_handle.stream_dir());
        assert!(segment_count(log_handle.stream_dir()) > 1, "no rotation");
        let central = stream_lines(central_dir);
        assert_eq!(central.len(), local.len());
        assert!(
            central == local,
            "{}: central log differs",
            central_dir.display()
        );
        let report = verify_log(
            central_dir.parent().unwrap(),
            &VerifyOptions {
                trusted_keys: trusted.clone(),
            },
        )
        .unwrap();
        assert!(!report.is_tampered(), "{:?}", report.findings);
        assert_eq!(report.streams.len(), 1);
        assert_eq!(report.streams[0].status, StreamStatus::Clean);
    }
    let total = stream_lines(acme.stream_dir()).len() + stream_lines(globex.stream_dir()).len();
    assert_eq!(stats.committed as usize, total);

    // The group's offsets were committed: a collector started again in the
    // same group has nothing left to read.
    let again = collect_until_idle(&broker, &out, &trusted, "central");
    assert_eq!(again.received, 0, "{again:?}");
    // A new group reads the topic from the start: everything is a
    // duplicate of what the central log has.
    let fresh = collect_until_idle(&broker, &out, &trusted, "audit-2");
    assert_eq!(fresh.committed, 0, "{fresh:?}");
    assert!(fresh.duplicates as usize >= total, "{fresh:?}");
}

#[test]
fn a_flipped_byte_and_an_untrusted_key_are_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let (stranger_key, _) = common::key(tmp.path(), "stranger");
    let trusted = vec![PublicKey::load(&public).unwrap()];
    let broker = KafkaBroker::start(tmp.path());

    let mut ids = Vec::new();
    for (k, name) in [
        (&key, "good"),
        (&key, "flipped"),
        (&stranger_key, "stranger"),
    ] {
        let l = open_log(&log, k, "acme", "standard_7y", 1 << 20);
        for i in 0..200 {
            l.emit(event(i)).unwrap();
        }
        assert!(l.shutdown(Duration::from_secs(10)));
        ids.push((
            name,
            l.stream_id().to_string(),
            l.stream_dir().to_path_buf(),
        ));
    }
    // Flip one byte of a record in the middle of the second stream.
    let flipped_dir = &ids[1].2;
    let seg = flipped_dir.join("seg-000000.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    let at = text.find("\"decision\":\"d120\"").unwrap();
    let line_no = text[..at].matches('\n').count();
    let mut bytes = text.into_bytes();
    bytes[at + "\"decision\":\"".len()] = b'e';
    std::fs::write(&seg, &bytes).unwrap();
    let flipped_line = stream_lines(flipped_dir)[line_no].clone();
    let flipped_seq = serde_json::from_slice::<serde_json::Value>(&flipped_line).unwrap()["seq"]
        .as_u64()
        .unwrap();

    let mut exporter = KafkaExporter::new(config(&broker)).unwrap();
    let stats = ship(
        &log,
        &mut exporter,
        &ship_opts(Some(Duration::from_millis(500))),
        &AtomicBool::new(false),
    )
    .unwrap();
    let total: usize = ids.iter().map(|(_, _, d)| stream_lines(d).len()).sum();
    assert_eq!(stats.shipped as usize, total);

    let stats = collect_until_idle(&broker, &out, &trusted, "central");
    assert_eq!(stats.quarantined_streams, 2, "{stats:?}");
    assert_eq!(stats.received as usize, total, "{stats:?}");

    let finding = |id: &str| -> serde_json::Value {
        let p = out.join("quarantine").join(id).join("finding.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let f = finding(&ids[1].1);
    assert_eq!(f["findings"][0]["code"], "hash_mismatch", "{f}");
    assert_eq!(f["first_bad_seq"], flipped_seq);
    let quarantined: Vec<Vec<u8>> =
        std::fs::read(out.join("quarantine").join(&ids[1].1).join("records.jsonl"))
            .unwrap()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
    assert!(quarantined.contains(&flipped_line));
    let committed = f["committed_records"].as_u64().unwrap();
    assert!(committed > 0 && committed <= flipped_seq, "{f}");
    assert_eq!(
        committed as usize + quarantined.len(),
        stream_lines(flipped_dir).len()
    );

    let f = finding(&ids[2].1);
    assert_eq!(f["findings"][0]["code"], "unknown_key", "{f}");
    assert_eq!(f["first_bad_seq"], 0);
    assert_eq!(f["committed_records"], 0);
    assert!(!out.join("acme/standard_7y").join(&ids[2].1).exists());

    let report = verify_log(
        &out.join("acme/standard_7y"),
        &VerifyOptions {
            trusted_keys: trusted.clone(),
        },
    )
    .unwrap();
    assert!(!report.is_tampered(), "{:?}", report.findings);
    let status = |id: &str| {
        report
            .streams
            .iter()
            .find(|s| s.stream_id == id)
            .map(|s| s.status)
    };
    assert_eq!(status(&ids[0].1), Some(StreamStatus::Clean));
    assert_eq!(status(&ids[1].1), Some(StreamStatus::Open));
    assert_eq!(
        stream_lines(&out.join("acme/standard_7y").join(&ids[0].1)),
        stream_lines(&ids[0].2)
    );
}

#[test]
fn records_sent_twice_arrive_once_and_the_key_keeps_a_stream_in_one_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let trusted = vec![PublicKey::load(&public).unwrap()];
    let broker = KafkaBroker::start(tmp.path());

    let agents: Vec<_> = (0..4)
        .map(|i| open_log(&log, &key, &format!("t{i}"), "standard_7y", 1 << 20))
        .collect();
    for a in &agents {
        for i in 0..120 {
            a.emit(event(i)).unwrap();
        }
        assert!(a.shutdown(Duration::from_secs(10)));
    }
    // Each stream's records, sent twice by hand the way a shipper retrying
    // a batch does (new sends, not librdkafka retries), interleaved.
    let mut exporter = KafkaExporter::new(config(&broker)).unwrap();
    let per_stream: Vec<Vec<Outgoing>> = agents
        .iter()
        .map(|a| {
            stream_lines(a.stream_dir())
                .into_iter()
                .enumerate()
                .map(|(seq, line)| Outgoing {
                    stream_id: a.stream_id().to_string(),
                    seq: seq as u64,
                    tenant: "t".into(),
                    msg_id: format!("{}:{seq}", a.stream_id()),
                    line,
                })
                .collect()
        })
        .collect();
    let longest = per_stream.iter().map(Vec::len).max().unwrap();
    let records: Vec<Outgoing> = (0..longest)
        .flat_map(|i| per_stream.iter().filter_map(move |s| s.get(i).cloned()))
        .collect();
    let mut sent = 0;
    for half in records.chunks(records.len() / 2 + 1) {
        exporter.export(half).unwrap();
        exporter.export(&half[..half.len() / 2]).unwrap();
        sent += half.len() + half.len() / 2;
    }

    // On the wire: every stream in one partition, in seq order (each copy),
    // with its idempotency key and tenant in the headers.
    let on_wire = read_topic(&broker, "agent-audit", 3, sent);
    for a in &agents {
        let mine: Vec<_> = on_wire.iter().filter(|m| m.key == a.stream_id()).collect();
        let lines = stream_lines(a.stream_dir()).len();
        let parts: HashSet<i32> = mine.iter().map(|m| m.partition).collect();
        assert_eq!(parts.len(), 1, "{parts:?}");
        for m in &mine {
            assert_eq!(m.msg_id, format!("{}:{}", a.stream_id(), m.seq));
            assert_eq!(m.tenant, "t");
        }
        let distinct: HashSet<u64> = mine.iter().map(|m| m.seq).collect();
        assert_eq!(distinct.len(), lines);
        assert!(
            mine.len() > lines,
            "no record of {} was sent twice",
            a.stream_id()
        );
        // In order: the first copies come as 0, 1, 2, … (copies sent again
        // come after the originals).
        let mut seen = HashSet::new();
        let firsts: Vec<u64> = mine
            .iter()
            .map(|m| m.seq)
            .filter(|s| seen.insert(*s))
            .collect();
        assert_eq!(firsts, (0..lines as u64).collect::<Vec<_>>());
    }

    // A collector stopped early commits what it wrote; the next one
    // resumes from there, and together they write every record once.
    let dirs: Vec<PathBuf> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| out.join(format!("t{i}/standard_7y")).join(a.stream_id()))
        .collect();
    let mut source = KafkaSource::new(config(&broker), "central").unwrap();
    let stop = AtomicBool::new(false);
    let mut first_opts = collect_opts(&out, &trusted, Some(Duration::from_secs(6)));
    first_opts.fetch_max = 50;
    let first = std::thread::scope(|s| {
        let h = s.spawn(|| collect(&mut source, &first_opts, &stop).unwrap());
        wait_for(60, "the first collector to write", || {
            dirs.iter().any(|d| count_lines(d) > 0)
        });
        stop.store(true, Ordering::Release);
        h.join().unwrap()
    });
    drop(source);
    let second = collect_until_idle(&broker, &out, &trusted, "central");
    assert_eq!(first.quarantined_streams + second.quarantined_streams, 0);
    let total: usize = agents
        .iter()
        .map(|a| stream_lines(a.stream_dir()).len())
        .sum();
    assert_eq!(
        (first.committed + second.committed) as usize,
        total,
        "{first:?} {second:?}"
    );
    // Resumed, not started over: the second collector read less than the
    // whole topic.
    assert!(
        second.received < on_wire.len() as u64,
        "{first:?} {second:?}"
    );
    for (i, (a, central)) in agents.iter().zip(&dirs).enumerate() {
        assert!(
            stream_lines(central) == stream_lines(a.stream_dir()),
            "t{i}"
        );
        let report = verify_log(
            central.parent().unwrap(),
            &VerifyOptions {
                trusted_keys: trusted.clone(),
            },
        )
        .unwrap();
        assert_eq!(report.streams[0].status, StreamStatus::Clean, "t{i}");
    }
}

struct WireRecord {
    partition: i32,
    key: String,
    msg_id: String,
    seq: u64,
    tenant: String,
}

/// Every record of `topic`, read with a plain consumer (no group), in
/// partition and offset order.
fn read_topic(
    broker: &KafkaBroker,
    topic: &str,
    partitions: i32,
    expect: usize,
) -> Vec<WireRecord> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "raw-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expect && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let h = m.headers().unwrap();
        let get = |name: &str| {
            (0..h.count())
                .map(|i| h.get(i))
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap()
        };
        out.push((
            m.partition(),
            m.offset(),
            WireRecord {
                partition: m.partition(),
                key: String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                msg_id: get("agent-audit-msg-id"),
                seq: get("agent-audit-seq").parse().unwrap(),
                tenant: get("agent-audit-tenant"),
            },
        ));
    }
    assert_eq!(out.len(), expect, "records on the topic");
    out.sort_by_key(|(p, o, _)| (*p, *o));
    out.into_iter().map(|(_, _, r)| r).collect()
}
