//! Writes N typical tool-call events through one writer and prints the
//! writer's events/s: a quick check, and a target for `perf` or
//! `valgrind --tool=callgrind` (instruction counts do not depend on how
//! busy the machine is).
//!
//! ```sh
//! cargo run --release -p agent-audit --example write_throughput -- 100000 /tmp/tp
//! ```

use std::time::{Duration, Instant};

use agent_audit::{AuditLog, Event, LogConfig, Overflow, SpanId, TraceId};

#[path = "shared/typical.rs"]
mod typical;

// As the bindings, the binary and the core benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let dir = args.next().unwrap_or_else(|| "./throughput-log".into());
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = LogConfig::new(&dir);
    config.queue_capacity = 1 << 20;
    config.queue_max_bytes = 1 << 31;
    config.overflow = Overflow::Block(Duration::from_secs(60));
    config.sign_records = std::env::var_os("SIGN_RECORDS").is_some();
    let trace = TraceId::random();
    let parent = SpanId::random();
    let events: Vec<Event> = (0..n)
        .map(|i| typical::tool_event(i, trace, parent))
        .collect();
    let log = AuditLog::open(config)?;
    let cpu0 = process_cpu_secs();
    let t = Instant::now();
    for e in events {
        log.emit(e)?;
    }
    if !log.shutdown(Duration::from_secs(600)) {
        return Err("shutdown timed out".into());
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = process_cpu_secs() - cpu0;
    // CPU time barely depends on how busy the machine is; wall time does.
    println!(
        "{n} events in {secs:.3}s: {:.0} events/s (dropped {}); CPU {:.2} µs/event = {:.0} events per CPU-second",
        n as f64 / secs,
        log.stats().dropped,
        cpu * 1e6 / n as f64,
        n as f64 / cpu
    );
    Ok(())
}

/// User + system CPU time of this process so far (Linux; 0 elsewhere).
fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
