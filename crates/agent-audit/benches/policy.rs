//! Policy costs on the caller thread, in one run, as medians and ratios:
//! `cargo bench -p agent-audit --bench policy`.
//!
//! - the check for a tool no blocking rule can match (a cached
//!   [`ToolGate`] that is open) next to an un-policied audited call
//!   (`AuditLog::emit` of the tool's event, policy off);
//! - the pre-execution check of a 2 KB argument payload against the whole
//!   built-in pack turned into blocking rules, and the writer-side
//!   `observe` of the same event under the stock pack.
//!
//! Targets (issue 5): the open-gate check adds <= 0.2 us; the 2 KB check
//! costs <= 20 us.

use std::hint::black_box;
use std::time::{Duration, Instant};

use agent_audit::policy::{BUILTIN_POLICY, PolicyEngine, ToolGate};
use agent_audit::record::{Body, ToolCall, ToolInfo};
use agent_audit::{
    AuditLog, Event, KeySource, LogConfig, Overflow, PayloadPart, PolicySource, SpanId, TraceId,
};
use serde_json::{Value, json};

/// Median ns per call over `samples` batches of `batch` calls.
fn median_ns(batch: usize, samples: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..batch {
        f();
    }
    let mut per: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

/// Arguments of about 2 KB, like a support agent's ticket update.
fn args_2kb() -> Value {
    let note = "Customer reports the export job has failed three nights in a row; the logs show a timeout \
                talking to the reporting replica. Asked them to retry after the maintenance window. ";
    json!({
        "ticket_id": "TCK-2025-118734",
        "customer": {"id": "cus_8f2a91", "plan": "enterprise", "region": "eu-west-1"},
        "status": "pending_customer",
        "tags": ["export", "reporting", "timeout", "replica"],
        "sql": "SELECT id, status, created_at FROM export_jobs WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20",
        "url": "https://status.internal.example/api/v1/incidents?component=reporting",
        "note": note.repeat(9),
        "attachments": [{"name": "export.log", "sha256": "9f2c1e0b7d4a3f6e8c5b2a1d0e9f8c7b6a5d4e3f2c1b0a9e8d7c6b5a4f3e2d1c"}]
    })
}

/// The built-in pack with every content rule looking at arguments only and
/// blocking: the heaviest caller-thread check the pack can make.
fn blocking_pack() -> PolicyEngine {
    let mut text = String::new();
    for line in BUILTIN_POLICY.lines() {
        if line.starts_with("in = ")
            || line.starts_with("action = ")
            || line.starts_with("kinds = ")
        {
            continue;
        }
        text.push_str(line);
        text.push('\n');
        if line == "[[rule]]" {
            text.push_str("in = [\"args\"]\naction = \"block\"\nkinds = [\"tool_call\"]\n");
        }
    }
    let user = "version = \"bench\"\nbuiltin = false\n".to_string()
        + &text.replace("version = \"agent-audit-builtin/1\"", "");
    PolicyEngine::from_toml(&user, "<bench>").expect("bench pack")
}

fn tool_event(name: &str, args: &Value, trace: TraceId) -> Event {
    Event::new(Body::ToolCall(ToolCall {
        tool: ToolInfo {
            name: name.into(),
            ..ToolInfo::default()
        },
        ..ToolCall::default()
    }))
    .with_part(PayloadPart::Args, args.clone())
    .in_trace(trace, SpanId::random(), None)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agent-audit-policy-bench-{}", std::process::id()));
    let mut config = LogConfig::new(&dir);
    config.key = KeySource::Pem(
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBZzHb1JxcK5k3uAQ0nDkcoZl+MYqzfXh7zFGVuGeYd2\n-----END PRIVATE KEY-----\n"
            .into(),
    );
    config.policy = PolicySource::Off;
    config.overflow = Overflow::Drop;
    let log = AuditLog::open(config).expect("log");

    let trace = TraceId::random();
    let small = json!({"city": "Oslo", "units": "metric"});
    let big = args_2kb();
    let big_bytes = serde_json::to_vec(&big).map_or(0, |v| v.len());

    let stock = PolicyEngine::builtin().expect("builtin");
    let blocking = blocking_pack();
    let open_gate: ToolGate = blocking.gate("weather.lookup");
    // With every rule blocking and most rules tool-agnostic, no tool is
    // ungated in `blocking`; the stock pack blocks nothing.
    let stock_gate = stock.gate("weather.lookup");
    assert!(stock_gate.is_open());
    let gated = blocking.gate("ticket.update");
    assert!(!gated.is_open());
    let _ = open_gate;

    let rounds = 5;
    let mut rows: Vec<(String, Vec<f64>)> = vec![
        ("un-policied audited call (emit, policy off)".into(), vec![]),
        (
            "open-gate check (tool no blocking rule names)".into(),
            vec![],
        ),
        ("emit + open-gate check".into(), vec![]),
        (
            format!("pre_check, {big_bytes} B args, whole pack blocking"),
            vec![],
        ),
        (
            format!("observe (writer), {big_bytes} B args, stock pack"),
            vec![],
        ),
        ("observe (writer), small args, stock pack".into(), vec![]),
    ];
    let event_small = tool_event("weather.lookup", &small, trace);
    let event_big = tool_event("ticket.update", &big, trace);
    for _ in 0..rounds {
        // Interleaved rounds: the machine's noise hits every row alike.
        rows[0].1.push(median_ns(2_000, 31, || {
            let _ = black_box(log.emit(black_box(event_small.clone())));
        }));
        rows[1].1.push(median_ns(20_000, 31, || {
            let g = black_box(&stock_gate);
            if !g.is_open() {
                black_box(stock.pre_check(g, "weather.lookup", Some(trace), None, &small));
            }
        }));
        rows[2].1.push(median_ns(2_000, 31, || {
            let g = black_box(&stock_gate);
            if !g.is_open() {
                black_box(stock.pre_check(g, "weather.lookup", Some(trace), None, &small));
            }
            let _ = black_box(log.emit(black_box(event_small.clone())));
        }));
        rows[3].1.push(median_ns(200, 31, || {
            black_box(blocking.pre_check(&gated, "ticket.update", None, None, black_box(&big)));
        }));
        rows[4].1.push(median_ns(200, 31, || {
            let mut e = event_big.clone();
            black_box(stock.observe(&mut e));
        }));
        rows[5].1.push(median_ns(2_000, 31, || {
            let mut e = event_small.clone();
            black_box(stock.observe(&mut e));
        }));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = log.shutdown(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);

    let med = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = med(&rows[0].1);
    println!("\npolicy benchmarks (median over {rounds} interleaved rounds of batch medians):");
    println!("| figure | median | vs un-policied call | target |");
    println!("|---|---|---|---|");
    for (i, (name, v)) in rows.iter().enumerate() {
        let m = med(v);
        let target = match i {
            1 => format!("<= 200 ns {}", if m <= 200.0 { "ok" } else { "MISS" }),
            2 => {
                let added = m - base;
                format!(
                    "adds {added:.0} ns {}",
                    if added <= 200.0 { "ok" } else { "MISS" }
                )
            }
            3 => format!("<= 20 us {}", if m <= 20_000.0 { "ok" } else { "MISS" }),
            _ => "-".into(),
        };
        println!("| {name} | {} | {:.2}x | {target} |", fmt_ns(m), m / base);
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} us", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}
