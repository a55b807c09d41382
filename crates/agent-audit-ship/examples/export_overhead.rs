//! What an in-process exporter costs the agent: a typical `tool_call`
//! event emitted through the core writer, with no exporter, with the
//! background exporter (`background::spawn_exporter`) shipping to a real
//! `nats-server -js` on loopback, and with the exporter attached while the
//! broker is down (a port nothing listens on), in interleaved rounds of
//! the same run, so that the machine's noise hits all three alike.
//!
//! Two scenarios, each round with a fresh log directory per variant:
//!
//! - **burst**: the events back to back. Caller cost = the emit loop's
//!   wall time (and the calling thread's CPU time) per event; end to end =
//!   events/s until the writer has shut down, and (broker up) until the
//!   exporter has every record acknowledged by JetStream.
//! - **paced**: an agent doing a fixed amount of its own work (`WORK_US`,
//!   calibrated, 10 µs by default) before each emit, so the writer and
//!   the exporter run *while* the agent works, as they do in an agent.
//!   Caller cost = the time inside `emit` per call (each call timed);
//!   agent slowdown = the whole loop's time per call against none.
//!
//! "CPU ms/round" is the process's CPU time (agent, writer, exporter and
//! NATS client threads; not nats-server) from the first emit until the
//! writer has shut down and, broker up, the exporter has caught up.
//!
//! Figures are medians over rounds; a ratio is the median over rounds of
//! (variant / "none" of the same round). nats-server runs on this machine
//! too (in a deployment the broker is elsewhere), so with the broker up it
//! competes for the cores.
//!
//! ```sh
//! cargo run --release -p agent-audit-ship --example export_overhead -- [N] [ROUNDS] [WORK_US]
//! ```
//! N (default 200000) events per variant and scenario, split over ROUNDS
//! (default 10). Needs `nats-server` on PATH or in /usr/sbin.
//! `BROKER_NICE=19` runs nats-server at nice 19 (closer to a broker on
//! another machine); `ONLY=none|up|down` runs one variant (for `perf`).

use std::fs;
use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_audit::record::{Body, Outcome, ResultStatus, ToolCall, ToolInfo};
use agent_audit::{
    AuditLog, Event, KeySource, LogConfig, Overflow, PayloadPart, Principal, SpanId, TraceId,
};
use agent_audit_ship::ShipOptions;
use agent_audit_ship::background::{ExportTarget, ExporterHandle, spawn_exporter};
use rustix::time::{ClockId, clock_gettime};
use serde_json::json;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A fixed key, so no development key (and its warning) is made.
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBZzHb1JxcK5k3uAQ0nDkcoZl+MYqzfXh7zFGVuGeYd2\n-----END PRIVATE KEY-----\n";

const VARIANTS: [Variant; 3] = [Variant::None, Variant::Up, Variant::Down];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    None,
    Up,
    Down,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::None => "no exporter",
            Variant::Up => "exporter, broker up",
            Variant::Down => "exporter, broker down",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Burst,
    Paced,
}

#[derive(Clone, Debug, Default)]
struct Round {
    /// Caller: ns per emit (wall).
    emit_ns: f64,
    /// Caller: thread CPU ns per emit (burst only).
    emit_cpu_ns: f64,
    /// Paced: whole loop (work + emit) ns per call.
    call_ns: f64,
    /// Events/s until the writer had shut down.
    writer_eps: f64,
    /// Events/s until everything was acknowledged by JetStream (broker up).
    shipped_eps: Option<f64>,
    /// Process CPU ms from the first emit until the writer had shut down
    /// and (broker up) the exporter had caught up.
    cpu_ms: f64,
    dropped: u64,
}

fn cpu_ns(id: ClockId) -> u128 {
    let t = clock_gettime(id);
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

fn config(dir: &Path) -> LogConfig {
    let mut c = LogConfig::new(dir);
    c.key = KeySource::Pem(KEY_PEM.into());
    c.principal = Principal {
        tenant_id: Some("t_bench".into()),
        agent_id: Some("support-agent-v2".into()),
        ..Default::default()
    };
    // Room for a whole round: what is timed is the enqueue, not the drop
    // path (drops are counted and printed).
    c.queue_capacity = 1 << 20;
    c.queue_max_bytes = 1 << 31;
    c.overflow = Overflow::Drop;
    c
}

/// The core benchmark's typical tool call: name and version, status,
/// duration, five arguments (an e-mail among them), a small result.
fn tool_event(trace: TraceId, parent: SpanId, i: u64) -> Event {
    Event::new(Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: "crm.update_customer".into(),
            version: Some("2.3.1".into()),
            ..Default::default()
        },
        outcome: Outcome {
            result_status: Some(ResultStatus::Ok),
            duration_ms: Some(12.5),
            error_type: None,
        },
        ..Default::default()
    }))
    .in_trace(trace, SpanId::random(), Some(parent))
    .with_part(
        PayloadPart::Args,
        json!({
            "customer_id": format!("cus_{i:08}"),
            "email": "jane.doe@example.com",
            "sql": "UPDATE customers SET tier = ? WHERE id = ?",
            "tier": "gold",
            "notify": true,
        }),
    )
    .with_part(
        PayloadPart::Result,
        json!({"status": "updated", "rows_affected": 1, "ticket": format!("TCK-{i:06}")}),
    )
}

/// The agent's own work: a fixed number of multiply-adds.
fn work(iters: u64, seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..iters {
        x = black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    x
}

fn calibrate(work_us: f64) -> u64 {
    let mut iters = 1000u64;
    loop {
        let t = Instant::now();
        for i in 0..200 {
            black_box(work(iters, i));
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / 200.0;
        if per > work_us / 4.0 || iters > 1 << 30 {
            // Best of a few runs: the quietest estimate.
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for i in 0..200 {
                    black_box(work(iters, i));
                }
                best = best.min(t.elapsed().as_secs_f64() * 1e6 / 200.0);
            }
            return ((iters as f64) * work_us / best).round().max(1.0) as u64;
        }
        iters *= 2;
    }
}

/// nats-server with JetStream on a free loopback port.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start(store: &Path) -> Res<Nats> {
        let bin = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("nats-server"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/sbin/nats-server")])
            .find(|p| p.is_file())
            .ok_or("nats-server is not installed (Debian: apt-get install nats-server)")?;
        let port = free_port()?;
        // BROKER_NICE=19 approximates a broker on another machine: it
        // then takes little of this machine's CPU from the agent.
        let nice = std::env::var("BROKER_NICE").unwrap_or_else(|_| "0".into());
        let child = Command::new("nice")
            .args(["-n", &nice])
            .arg(bin)
            .args(["-js", "-sd"])
            .arg(store)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nats-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nats { child, port })
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Res<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Setup {
    base: PathBuf,
    up_url: String,
    down_url: String,
    iters: u64,
}

fn run_round(
    setup: &Setup,
    scenario: Scenario,
    variant: Variant,
    n: u64,
    round: usize,
) -> Res<Round> {
    let dir = setup
        .base
        .join(format!("{scenario:?}-{variant:?}-{round}").to_lowercase());
    let trace = TraceId::random();
    let parent = SpanId::random();
    let events: Vec<Event> = (0..n).map(|i| tool_event(trace, parent, i)).collect();
    let log = AuditLog::open(config(&dir))?;
    let opts = ShipOptions {
        report_errors: false,
        ..ShipOptions::default()
    };
    let exporter: Option<ExporterHandle> = match variant {
        Variant::None => None,
        Variant::Up => Some(spawn_exporter(
            &dir,
            ExportTarget::url(&setup.up_url)?,
            opts,
        )?),
        Variant::Down => Some(spawn_exporter(
            &dir,
            ExportTarget::url(&setup.down_url)?,
            opts,
        )?),
    };
    let mut r = Round::default();
    let cpu0 = cpu_ns(ClockId::ProcessCPUTime);
    let t0 = Instant::now();
    match scenario {
        Scenario::Burst => {
            let tcpu0 = cpu_ns(ClockId::ThreadCPUTime);
            for e in events {
                log.emit(e)?;
            }
            let wall = t0.elapsed();
            let tcpu = cpu_ns(ClockId::ThreadCPUTime) - tcpu0;
            r.emit_ns = wall.as_nanos() as f64 / n as f64;
            r.emit_cpu_ns = tcpu as f64 / n as f64;
        }
        Scenario::Paced => {
            let mut in_emit = Duration::ZERO;
            for (i, e) in events.into_iter().enumerate() {
                black_box(work(setup.iters, i as u64));
                let t = Instant::now();
                log.emit(e)?;
                in_emit += t.elapsed();
            }
            r.call_ns = t0.elapsed().as_nanos() as f64 / n as f64;
            r.emit_ns = in_emit.as_nanos() as f64 / n as f64;
        }
    }
    if !log.shutdown(Duration::from_secs(600)) {
        return Err("the writer did not shut down".into());
    }
    r.writer_eps = n as f64 / t0.elapsed().as_secs_f64();
    r.dropped = log.stats().dropped;
    if let Some(ex) = exporter {
        if variant == Variant::Up {
            if !ex.drain(Duration::from_secs(300)) {
                return Err(format!("the exporter did not catch up: {:?}", ex.stats()).into());
            }
            r.shipped_eps = Some(n as f64 / t0.elapsed().as_secs_f64());
        } else {
            // Hung on acks that cannot come: left to end by itself.
            ex.stop(Duration::from_millis(100));
        }
    }
    r.cpu_ms = (cpu_ns(ClockId::ProcessCPUTime) - cpu0) as f64 / 1e6;
    drop(log);
    let _ = fs::remove_dir_all(&dir);
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(10), |s| s.parse())?;
    let work_us: f64 = args.next().map_or(Ok(10.0), |s| s.parse())?;
    let per_round = (n / rounds as u64).max(1);

    let tmp = tempfile::tempdir()?;
    let nats = Nats::start(&tmp.path().join("jetstream"))?;
    let setup = Setup {
        base: tmp.path().join("logs"),
        up_url: format!("nats://127.0.0.1:{}", nats.port),
        // Nothing listens there.
        down_url: format!("nats://127.0.0.1:{}", free_port()?),
        iters: calibrate(work_us),
    };
    println!(
        "export_overhead: {per_round} events x {rounds} rounds per variant and scenario; \
         paced work {work_us} us/call ({} iterations); nats-server at nice {}; {} cores; \
         load average at start {}",
        setup.iters,
        std::env::var("BROKER_NICE").unwrap_or_else(|_| "0".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    // For profiling one variant (`perf record`): ONLY=none|up|down.
    let only = match std::env::var("ONLY").ok().as_deref() {
        None => None,
        Some("none") => Some(Variant::None),
        Some("up") => Some(Variant::Up),
        Some("down") => Some(Variant::Down),
        Some(o) => return Err(format!("ONLY={o}: expected none, up or down").into()),
    };
    if only.is_some() {
        for scenario in [Scenario::Burst, Scenario::Paced] {
            for round in 0..rounds {
                if let Some(v) = only {
                    run_round(&setup, scenario, v, per_round, round)?;
                }
            }
        }
        println!("ran {only:?} only");
        return Ok(());
    }
    for scenario in [Scenario::Burst, Scenario::Paced] {
        let mut results: Vec<Vec<Round>> = vec![Vec::new(); VARIANTS.len()];
        // Warm-up round, not counted.
        for v in VARIANTS {
            run_round(&setup, scenario, v, per_round.min(5000), usize::MAX)?;
        }
        for round in 0..rounds {
            for k in 0..VARIANTS.len() {
                let vi = (round + k) % VARIANTS.len();
                let r = run_round(&setup, scenario, VARIANTS[vi], per_round, round)?;
                results[vi].push(r);
            }
        }
        let col = |vi: usize, f: &dyn Fn(&Round) -> Option<f64>| {
            median(results[vi].iter().filter_map(f).collect())
        };
        println!();
        match scenario {
            Scenario::Burst => {
                println!("burst: emits back to back (median of {rounds} rounds)");
                println!(
                    "  {:<24} {:>10} {:>7} {:>12} {:>7} {:>12} {:>7} {:>13} {:>12} {:>8}",
                    "variant",
                    "emit ns",
                    "ratio",
                    "emit CPU ns",
                    "ratio",
                    "writer ev/s",
                    "ratio",
                    "shipped ev/s",
                    "CPU ms/round",
                    "dropped"
                );
            }
            Scenario::Paced => {
                println!(
                    "paced: {work_us} us of agent work per call, then emit (median of {rounds} rounds)"
                );
                println!(
                    "  {:<24} {:>10} {:>7} {:>12} {:>9} {:>12} {:>7} {:>13} {:>12} {:>8}",
                    "variant",
                    "emit ns",
                    "ratio",
                    "call ns",
                    "slowdown",
                    "writer ev/s",
                    "ratio",
                    "shipped ev/s",
                    "CPU ms/round",
                    "dropped"
                );
            }
        }
        // Ratios: the median over rounds of (variant / none of that round).
        let ratio = |vi: usize, f: &dyn Fn(&Round) -> f64| {
            median(
                results[vi]
                    .iter()
                    .zip(&results[0])
                    .map(|(r, base)| f(r) / f(base))
                    .collect(),
            )
        };
        for (vi, v) in VARIANTS.iter().enumerate() {
            let emit = col(vi, &|r| Some(r.emit_ns));
            let writer = col(vi, &|r| Some(r.writer_eps));
            let shipped = col(vi, &|r| r.shipped_eps);
            let shipped = if shipped.is_nan() {
                "-".to_string()
            } else {
                format!("{shipped:.0}")
            };
            let cpu_ms = col(vi, &|r| Some(r.cpu_ms));
            let dropped: u64 = results[vi].iter().map(|r| r.dropped).sum();
            match scenario {
                Scenario::Burst => {
                    let cpu = col(vi, &|r| Some(r.emit_cpu_ns));
                    println!(
                        "  {:<24} {:>10.0} {:>7.3} {:>12.0} {:>7.3} {:>12.0} {:>7.3} {:>13} {:>12.1} {:>8}",
                        v.label(),
                        emit,
                        ratio(vi, &|r| r.emit_ns),
                        cpu,
                        ratio(vi, &|r| r.emit_cpu_ns),
                        writer,
                        ratio(vi, &|r| r.writer_eps),
                        shipped,
                        cpu_ms,
                        dropped
                    );
                }
                Scenario::Paced => {
                    let call = col(vi, &|r| Some(r.call_ns));
                    println!(
                        "  {:<24} {:>10.0} {:>7.3} {:>12.0} {:>8.1}% {:>12.0} {:>7.3} {:>13} {:>12.1} {:>8}",
                        v.label(),
                        emit,
                        ratio(vi, &|r| r.emit_ns),
                        call,
                        (ratio(vi, &|r| r.call_ns) - 1.0) * 100.0,
                        writer,
                        ratio(vi, &|r| r.writer_eps),
                        shipped,
                        cpu_ms,
                        dropped
                    );
                }
            }
        }
        let extra =
            ratio(1, &|r| r.cpu_ms) * col(0, &|r| Some(r.cpu_ms)) - col(0, &|r| Some(r.cpu_ms));
        println!(
            "  exporter's CPU in the agent process (broker up, over none): {:.2} us per event",
            extra * 1000.0 / per_round as f64
        );
    }
    println!();
    println!("load average at the end {}", loadavg());
    drop(nats);
    Ok(())
}
