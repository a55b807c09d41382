//! Shipping through a real nats-server with JetStream and collecting into
//! a central log: broker outage mid-export, a flipped byte, an untrusted
//! key. Needs `nats-server` (Debian package; scripts/test.sh installs it).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_audit::keys::PublicKey;
use agent_audit::verify::{StreamStatus, VerifyOptions, verify_log};
use agent_audit_ship::cursor::Cursor;
use agent_audit_ship::{
    CollectOptions, CollectStats, NatsConfig, NatsExporter, NatsSource, ShipOptions, collect, ship,
};
use common::*;

fn collect_until_idle(url: &str, out: &Path, trusted: &[PublicKey], durable: &str) -> CollectStats {
    let mut source = NatsSource::new(NatsConfig::new(url), durable, 100_000).unwrap();
    let mut opts = CollectOptions::new(out);
    opts.trusted_keys = trusted.to_vec();
    opts.until_idle = Some(Duration::from_millis(1500));
    opts.report_errors = false;
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

#[test]
fn broker_outage_mid_export_loses_nothing_and_the_central_log_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let trusted = vec![PublicKey::load(&public).unwrap()];
    let mut nats = NatsServer::start(tmp.path());
    let url = nats.url();

    // Two agents (two streams), different tenants and retention classes,
    // small segments so the tailer crosses rotations.
    let acme = open_log(&log, &key, "acme", "standard_7y", 16 * 1024);
    let globex = open_log(&log, &key, "globex corp", "short_90d", 16 * 1024);

    let stop = Arc::new(AtomicBool::new(false));
    let shipper = {
        let (log, url, stop) = (log.clone(), url.clone(), stop.clone());
        std::thread::spawn(move || {
            // Acks are waited for 500 ms, well below the outage, so the
            // retry path is taken (not just a slow ack).
            let mut cfg = NatsConfig::new(url);
            cfg.timeout = Duration::from_millis(500);
            let mut exporter = NatsExporter::new(cfg).unwrap();
            ship(&log, &mut exporter, &ship_opts(None), &stop).unwrap()
        })
    };
    let cursor_path = Cursor::path(&log, "nats");
    let shipped = |id: &str| {
        Cursor::load(&cursor_path, "nats")
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
    wait_for(20, "records to be shipped", || {
        shipped(acme.stream_id()) > 100 && shipped(globex.stream_id()) > 100
    });

    // The broker goes away mid-export; the agents keep writing.
    nats.stop();
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
    std::thread::sleep(Duration::from_millis(700));
    let during = (shipped(acme.stream_id()), shipped(globex.stream_id()));
    // Nothing can be acknowledged while the broker is down (a batch in
    // flight when it went may still have been).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        during,
        (shipped(acme.stream_id()), shipped(globex.stream_id()))
    );
    assert!(during.0 < 1000 && during.1 < 1000, "{before:?} {during:?}");

    // Back up, same store: the shipper resumes by itself.
    nats.launch();
    for _ in 0..100 {
        acme.emit(event(n)).unwrap();
        globex.emit(event(n)).unwrap();
        n += 1;
    }
    assert!(acme.shutdown(Duration::from_secs(10)));
    assert!(globex.shutdown(Duration::from_secs(10)));
    wait_for(30, "every stream shipped to its end", || {
        let c = Cursor::load(&cursor_path, "nats").unwrap();
        c.streams.len() == 2 && c.streams.values().all(|s| s.closed)
    });
    stop.store(true, Ordering::Release);
    let stats = shipper.join().unwrap();
    assert!(stats.failures > 0, "the outage was not noticed: {stats:?}");

    let stats = collect_until_idle(&url, &out, &trusted, "central");
    assert_eq!(stats.quarantined_streams, 0, "{stats:?}");

    // Every record exactly once, in order, byte for byte.
    for (log_handle, tenant, class) in [
        (&acme, "acme", "standard_7y"),
        (&globex, "globex~20corp", "short_90d"),
    ] {
        let local = stream_lines(log_handle.stream_dir());
        assert!(segment_count(log_handle.stream_dir()) > 1, "no rotation");
        let central_dir = out.join(tenant).join(class).join(log_handle.stream_id());
        let central = stream_lines(&central_dir);
        assert_eq!(central.len(), local.len(), "{tenant}");
        assert!(central == local, "{tenant}: central log differs");
        let report = verify_log(
            &out.join(tenant).join(class),
            &VerifyOptions {
                trusted_keys: trusted.clone(),
            },
        )
        .unwrap();
        assert!(!report.is_tampered(), "{:?}", report.findings);
        assert_eq!(report.streams.len(), 1);
        assert_eq!(report.streams[0].status, StreamStatus::Clean);
    }
    assert_eq!(
        stats.committed as usize,
        stream_lines(acme.stream_dir()).len() + stream_lines(globex.stream_dir()).len()
    );
}

#[test]
fn a_flipped_byte_and_an_untrusted_key_are_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let (stranger_key, _) = common::key(tmp.path(), "stranger");
    let trusted = vec![PublicKey::load(&public).unwrap()];
    let nats = NatsServer::start(tmp.path());

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

    let mut exporter = NatsExporter::new(NatsConfig::new(nats.url())).unwrap();
    let stats = ship(
        &log,
        &mut exporter,
        &ship_opts(Some(Duration::from_millis(500))),
        &AtomicBool::new(false),
    )
    .unwrap();
    let total: usize = ids.iter().map(|(_, _, d)| stream_lines(d).len()).sum();
    assert_eq!(stats.shipped as usize, total);

    let stats = collect_until_idle(&nats.url(), &out, &trusted, "central");
    assert_eq!(stats.quarantined_streams, 2, "{stats:?}");

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
    // What a verified checkpoint covered before the flip is in the central
    // log; the flipped record and everything after it is not.
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

    // The central partition verifies: the good stream clean, the broken
    // one's accepted prefix intact (open, not tampered).
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
