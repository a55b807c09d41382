//! The in-process exporter (`background::spawn_exporter`) next to the
//! core writer, through a real nats-server with JetStream that is down
//! when the agent starts and goes away again mid-run: the agent's calls
//! never fail or wait, and everything ends up in the collector's central
//! log, which verifies. Needs `nats-server` (scripts/test.sh installs it).

mod common;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use agent_audit::keys::PublicKey;
use agent_audit::verify::{StreamStatus, VerifyOptions, verify_log};
use agent_audit_ship::background::{ExportTarget, ExporterState, spawn_exporter};
use agent_audit_ship::{CollectOptions, NatsConfig, NatsSource, ShipOptions, collect};
use common::*;

fn opts() -> ShipOptions {
    ShipOptions {
        poll: Duration::from_millis(20),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        report_errors: false,
        ..ShipOptions::default()
    }
}

#[test]
fn the_agent_never_waits_for_the_broker_and_everything_arrives_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let out = tmp.path().join("central");
    let (key, public) = key(tmp.path(), "writer");
    let trusted = vec![PublicKey::load(&public).unwrap()];
    // The broker is down when the agent starts.
    let mut nats = NatsServer::start(tmp.path());
    nats.stop();

    // What `init` does: open the log, then attach the exporter by URL.
    let log = open_log(&log_dir, &key, "acme", "standard_7y", 16 * 1024);
    let exporter =
        spawn_exporter(&log_dir, ExportTarget::url(&nats.url()).unwrap(), opts()).unwrap();

    let mut n = 0;
    let mut emit = |count: usize, log: &agent_audit::AuditLog| {
        let t = Instant::now();
        for _ in 0..count {
            assert!(log.emit(event(n)).unwrap(), "event {n} not taken");
            n += 1;
        }
        assert!(log.flush(Duration::from_secs(5)));
        t.elapsed()
    };

    // 1. Broker down: the agent's calls succeed at once; nothing ships.
    let took = emit(400, &log);
    assert!(took < Duration::from_secs(2), "400 emits took {took:?}");
    wait_for(30, "a failed export attempt", || {
        exporter.stats().failures > 0
    });
    let s = exporter.stats();
    assert_eq!(s.state, ExporterState::Shipping);
    assert_eq!(s.shipped, 0, "{s:?}");
    assert!(
        s.consecutive_failures > 0 && s.last_error.is_some(),
        "{s:?}"
    );

    // 2. The broker comes up: the exporter catches up by itself.
    nats.launch();
    emit(300, &log);
    wait_for(60, "the exporter to catch up", || {
        let s = exporter.stats();
        s.consecutive_failures == 0 && s.shipped >= 700
    });

    // 3. It goes away mid-run (SIGKILL); the agent keeps writing.
    nats.stop();
    let took = emit(400, &log);
    assert!(took < Duration::from_secs(2), "400 emits took {took:?}");
    wait_for(30, "the outage to be noticed", || {
        exporter.stats().consecutive_failures > 0
    });

    // 4. Back up (same store); more events; the agent shuts down: the
    // log first, then the exporter ships the tail.
    nats.launch();
    emit(100, &log);
    assert!(log.shutdown(Duration::from_secs(10)));
    assert_eq!(log.stats().dropped, 0);
    let t = Instant::now();
    assert!(
        exporter.drain(Duration::from_secs(60)),
        "{:?}",
        exporter.stats()
    );
    let s = exporter.stats();
    assert_eq!(s.state, ExporterState::Stopped);
    assert!(s.caught_up);
    let local = stream_lines(log.stream_dir());
    assert!(
        s.shipped as usize >= local.len(),
        "{s:?} of {} (drain took {:?})",
        local.len(),
        t.elapsed()
    );

    // The collector's central log holds every record exactly once, byte
    // for byte, and verifies.
    let mut source = NatsSource::new(NatsConfig::new(nats.url()), "central", 100_000).unwrap();
    let mut copts = CollectOptions::new(&out);
    copts.trusted_keys = trusted.clone();
    copts.until_idle = Some(Duration::from_millis(1500));
    copts.report_errors = false;
    let stats = collect(&mut source, &copts, &AtomicBool::new(false)).unwrap();
    assert_eq!(stats.quarantined_streams, 0, "{stats:?}");
    assert_eq!(stats.committed as usize, local.len(), "{stats:?}");
    assert!(segment_count(log.stream_dir()) > 1, "no rotation");
    let partition = out.join("acme").join("standard_7y");
    let central = stream_lines(&partition.join(log.stream_id()));
    assert!(central == local, "central log differs from the local one");
    let report = verify_log(
        &partition,
        &VerifyOptions {
            trusted_keys: trusted,
        },
    )
    .unwrap();
    assert!(!report.is_tampered(), "{:?}", report.findings);
    assert_eq!(report.streams.len(), 1);
    assert_eq!(report.streams[0].status, StreamStatus::Clean);
}

#[test]
fn stopping_is_bounded_while_an_export_hangs_on_an_unreachable_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let (key, _) = key(tmp.path(), "writer");
    // Nothing listens there.
    let url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("nats://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let log = open_log(&log_dir, &key, "acme", "standard_7y", 1 << 20);
    let exporter = spawn_exporter(&log_dir, ExportTarget::url(&url).unwrap(), opts()).unwrap();
    let t = Instant::now();
    for i in 0..2000 {
        assert!(log.emit(event(i)).unwrap());
    }
    assert!(log.flush(Duration::from_secs(5)));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "2000 emits took {:?}",
        t.elapsed()
    );
    // The first export now waits for acks that cannot come (5 s timeout).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(exporter.stats().shipped, 0);
    let t = Instant::now();
    let ended = exporter.stop(Duration::from_millis(200));
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "stop took {:?}",
        t.elapsed()
    );
    // Dropping does not wait again for a thread that was left to end.
    let t = Instant::now();
    drop(exporter);
    assert!(t.elapsed() < Duration::from_millis(1500), "{ended}");
    assert!(log.shutdown(Duration::from_secs(5)));
}
