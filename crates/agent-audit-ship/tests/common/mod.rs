//! Test helpers: a real `nats-server` with JetStream on a free loopback
//! port, and audit logs written with the core's `AuditLog`. Also used by
//! the CLI's tests (`#[path]`).
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_audit::keys::KeyPair;
use agent_audit::record::{Body, Decision};
use agent_audit::{AuditLog, Event, KeySource, LogConfig, PayloadPart, Principal};

/// A nats-server process with JetStream, its store kept across restarts.
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

fn find_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push("/usr/sbin/nats-server".into());
    candidates.push("/usr/bin/nats-server".into());
    match candidates.into_iter().find(|p| p.is_file()) {
        Some(p) => p,
        None => panic!(
            "nats-server is not installed: these tests need a real NATS server with JetStream \
             (Debian: `apt-get install nats-server`; scripts/test.sh installs it)"
        ),
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl NatsServer {
    /// Starts a server storing JetStream data under `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        let store = dir.join("jetstream");
        fs::create_dir_all(&store).unwrap();
        let mut s = NatsServer {
            port: free_port(),
            store,
            log: dir.join("nats-server.log"),
            child: None,
        };
        s.launch();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again (same port, same store).
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let _ = fs::remove_file(&self.log);
        let child = Command::new(find_binary())
            .args(["-js", "-sd"])
            .arg(&self.store)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-l"])
            .arg(&self.log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("Server is ready") {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("nats-server exited with {status}: {log}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not become ready: {log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: the harshest broker outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A signing key saved as `name.pem` / `name.pub.pem` in `dir`.
pub fn key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let k = KeyPair::generate().unwrap();
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    k.save(&private).unwrap();
    fs::write(&public, k.public().to_pem().unwrap()).unwrap();
    (private, public)
}

/// Opens a writer in `log` for a tenant and retention class.
pub fn open_log(
    log: &Path,
    key: &Path,
    tenant: &str,
    retention: &str,
    segment_max_bytes: u64,
) -> AuditLog {
    let mut cfg = LogConfig::new(log);
    cfg.key = KeySource::File(key.to_path_buf());
    cfg.principal = Principal {
        tenant_id: Some(tenant.into()),
        agent_id: Some("ship-test".into()),
        ..Default::default()
    };
    cfg.retention_class = retention.into();
    cfg.checkpoint_every = 50;
    cfg.segment_max_bytes = segment_max_bytes;
    AuditLog::open(cfg).unwrap()
}

/// One small event with a payload.
pub fn event(i: usize) -> Event {
    Event::new(Body::Decision(Decision {
        decision: format!("d{i}"),
        ..Default::default()
    }))
    .with_part(
        PayloadPart::Reasoning,
        serde_json::json!({"why": "because", "n": i}),
    )
}

/// Every line of a stream directory's segments, in order.
pub fn stream_lines(dir: &Path) -> Vec<Vec<u8>> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".jsonl"))
        })
        .collect();
    segs.sort();
    let mut out = Vec::new();
    for s in segs {
        let data = fs::read(&s).unwrap();
        assert!(
            data.is_empty() || data.ends_with(b"\n"),
            "torn {}",
            s.display()
        );
        out.extend(
            data.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    out
}

/// Number of segment files of a stream directory.
pub fn segment_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("seg-"))
        })
        .count()
}

/// Polls `f` until it is true or `secs` pass.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
