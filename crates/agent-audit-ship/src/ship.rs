//! The shipping loop: tail, export, acknowledge, advance the cursor;
//! retry with exponential back-off and jitter.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Result;
use crate::exporter::Exporter;
use crate::tail::{TailLimits, Tailer};

/// How the shipper runs.
#[derive(Clone, Debug)]
pub struct ShipOptions {
    /// How often the log directory is looked at when there is nothing new.
    pub poll: Duration,
    /// The in-flight window: at most this much is read and unacknowledged.
    pub limits: TailLimits,
    /// First retry delay after a failed export.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Return once there has been nothing to ship for this long (tests,
    /// batch jobs); `None` follows the log until stopped.
    pub until_idle: Option<Duration>,
    /// Print failures and recoveries to stderr.
    pub report_errors: bool,
}

impl Default for ShipOptions {
    fn default() -> Self {
        ShipOptions {
            poll: Duration::from_millis(100),
            limits: TailLimits::default(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            until_idle: None,
            report_errors: true,
        }
    }
}

/// What a shipper run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShipStats {
    /// Records acknowledged by the receiver.
    pub shipped: u64,
    /// Batches exported.
    pub batches: u64,
    /// Failed export attempts (each was retried).
    pub failures: u64,
}

/// Ships the log in `log_dir` through `exporter` until `stop` is set or,
/// with `until_idle`, until caught up for that long. Errors only when the
/// log directory or the cursor cannot be used; receiver trouble is
/// retried forever.
pub fn ship(
    log_dir: &Path,
    exporter: &mut dyn Exporter,
    opts: &ShipOptions,
    stop: &AtomicBool,
) -> Result<ShipStats> {
    let mut tailer = Tailer::open(log_dir, exporter.name(), opts.limits)?;
    let mut stats = ShipStats::default();
    let mut attempt = 0u32;
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let batch = tailer.next_batch()?;
        if batch.is_empty() {
            if opts.until_idle.is_some_and(|d| idle_since.elapsed() >= d) {
                break;
            }
            sleep_unless_stopped(opts.poll, stop);
            continue;
        }
        idle_since = Instant::now();
        match exporter.export(&batch.records) {
            Ok(()) => {
                tailer.commit(&batch, batch.len())?;
                stats.shipped += batch.len() as u64;
                stats.batches += 1;
                if attempt > 0 && opts.report_errors {
                    eprintln!(
                        "agent-audit ship: {} is reachable again; resumed",
                        exporter.name()
                    );
                }
                attempt = 0;
            }
            Err(failure) => {
                let delivered = failure.delivered.min(batch.len());
                tailer.commit(&batch, delivered)?;
                stats.shipped += delivered as u64;
                stats.failures += 1;
                if attempt == 0 && opts.report_errors {
                    eprintln!(
                        "agent-audit ship: export to {} failed ({}); retrying with back-off",
                        exporter.name(),
                        failure.error
                    );
                }
                let delay = backoff(attempt, opts.backoff_initial, opts.backoff_max);
                attempt = attempt.saturating_add(1);
                sleep_unless_stopped(delay, stop);
                idle_since = Instant::now();
            }
        }
    }
    Ok(stats)
}

/// Exponential back-off with full jitter in [d/2, d].
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        u64::from(std::process::id())
    };
    let frac = (r % 1000) as f64 / 1000.0;
    exp.mul_f64(0.5 + 0.5 * frac)
}

/// Sleeps up to `d`, waking early once `stop` is set.
pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = agent_audit::writer::deadline_after(d);
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(2);
        for a in 0..10 {
            let d = backoff(a, i, m);
            let full = i.saturating_mul(1 << a).min(m);
            assert!(d >= full / 2 && d <= full, "{a}: {d:?}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(3, i, m)).collect();
        assert!(samples.len() > 1, "no jitter");
    }
}
