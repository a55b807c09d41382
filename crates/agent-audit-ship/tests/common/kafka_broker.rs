//! A real Kafka-protocol broker for the tests: Tansu (crates.io `tansu`,
//! Apache Kafka compatible, written in Rust) on a free loopback port, its
//! data in a SQLite file kept across restarts. `scripts/kafka-broker.sh`
//! installs it into a cache outside the clone (`scripts/test.sh` calls it);
//! the binary is found through `$AGENT_AUDIT_TANSU`, that cache, or `PATH`.
//! Also used by the CLI's tests (`#[path]`).
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Tansu broker process, its SQLite store kept across restarts.
pub struct KafkaBroker {
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Where `scripts/kafka-broker.sh` installs the broker.
fn cache_binary() -> Option<PathBuf> {
    let base = match std::env::var_os("AGENT_AUDIT_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache")
            .join("agent-audit"),
    };
    Some(base.join("tansu").join("bin").join("tansu"))
}

fn find_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("AGENT_AUDIT_TANSU") {
        candidates.push(p.into());
    }
    candidates.extend(cache_binary());
    if let Some(p) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&p).map(|d| d.join("tansu")));
    }
    match candidates.into_iter().find(|p| p.is_file()) {
        Some(p) => p,
        None => panic!(
            "no Kafka broker: these tests need Tansu (a Kafka-compatible broker) built with \
             SQLite storage; `bash scripts/kafka-broker.sh` installs it (scripts/test.sh runs it), \
             or set AGENT_AUDIT_TANSU to its path"
        ),
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl KafkaBroker {
    /// Starts a broker storing its data under `dir/kafka`.
    pub fn start(dir: &Path) -> KafkaBroker {
        let data = dir.join("kafka");
        fs::create_dir_all(&data).unwrap();
        let mut b = KafkaBroker {
            port: free_port(),
            log: data.join("tansu.log"),
            dir: data,
            child: None,
        };
        b.launch();
        b
    }

    /// Bootstrap servers, `127.0.0.1:PORT`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kafka://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("kafka://{}", self.brokers())
    }

    /// Starts the broker again (same port, same store).
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = fs::File::create(&self.log).unwrap();
        let child = Command::new(find_binary())
            .arg("broker")
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            // Relative to the working directory: DIR/tansu.db.
            .args(["--storage-engine", "sqlite:///tansu.db"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = ([127, 0, 0, 1], self.port).into();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            let log = || fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("the Kafka broker exited with {status}: {}", log());
            }
            assert!(
                Instant::now() < deadline,
                "the Kafka broker did not listen: {}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (SIGKILL: the harshest broker outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The broker's output so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of the Kafka broker's output ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
