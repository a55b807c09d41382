//! fsync off the writer thread.
//!
//! Syncing a segment that holds tens of megabytes of fresh data takes tens
//! of milliseconds. Done on the writer thread, the queue fills meanwhile:
//! a caller in `Overflow::Block` mode stalls (its event loop with it), one
//! in the default mode loses events. The writer hands interval syncs and
//! the final sync of a rotated-out segment to this thread instead and
//! keeps writing; `flush` and `shutdown` wait for the syncs asked before
//! them. Jobs run in the order asked, so an older segment is never synced
//! after a newer one. `FsyncPolicy::Always` still syncs on the writer
//! thread, after every write: that is what it promises.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError, bounded};

use crate::error::{AuditError, Result};

/// Interval syncs waiting at most; a disk slower than that skips a round
/// rather than queue files without bound.
const QUEUE: usize = 4;

struct Job {
    file: File,
    path: PathBuf,
    /// Told whether the sync (and every one before it) succeeded.
    ack: Option<Sender<bool>>,
}

/// Handle to the sync thread; the thread ends when this is dropped and
/// the jobs already asked are done.
pub(crate) struct Syncer {
    tx: Sender<Job>,
}

impl Syncer {
    /// Starts the thread. `on_error` runs there once per failed sync.
    pub(crate) fn start(on_error: impl Fn(&AuditError) + Send + 'static) -> Result<Syncer> {
        let (tx, rx) = bounded::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("agent-audit-fsync".into())
            .spawn(move || {
                // A failure is reported to every later waiter too: a flush
                // promises that what came before it is on disk.
                let mut failed = false;
                for job in rx {
                    if let Err(e) = job.file.sync_data() {
                        failed = true;
                        on_error(&AuditError::io(
                            format!("cannot sync {}", job.path.display()),
                            e,
                        ));
                    }
                    if let Some(ack) = job.ack {
                        let _ = ack.send(!failed);
                        failed = false;
                    }
                }
            })
            .map_err(|e| AuditError::io("cannot start the fsync thread", e))?;
        Ok(Syncer { tx })
    }

    /// Asks for `file` to be synced and returns at once. False when the
    /// thread is still busy with earlier syncs (the caller tries again
    /// later) or gone.
    pub(crate) fn sync_later(&self, file: File, path: PathBuf) -> bool {
        match self.tx.try_send(Job {
            file,
            path,
            ack: None,
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Syncs `file` after every sync asked before, and waits for it, up to
    /// `timeout`. True when this and the earlier syncs all succeeded.
    pub(crate) fn sync_now(&self, file: File, path: PathBuf, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = bounded(1);
        let job = Job {
            file,
            path,
            ack: Some(ack_tx),
        };
        self.tx.send_timeout(job, timeout).is_ok() && ack_rx.recv_timeout(timeout).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn counting() -> (Arc<AtomicU64>, impl Fn(&AuditError) + Send + 'static) {
        let n = Arc::new(AtomicU64::new(0));
        let m = n.clone();
        (n, move |_: &AuditError| {
            m.fetch_add(1, Ordering::Relaxed);
        })
    }

    #[test]
    fn syncs_files_and_acknowledges_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (errors, on_error) = counting();
        let syncer = Syncer::start(on_error).unwrap();
        for i in 0..3 {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, b"data").unwrap();
            let f = File::options().append(true).open(&path).unwrap();
            assert!(syncer.sync_later(f, path));
        }
        let path = dir.path().join("f0");
        let f = File::open(&path).unwrap();
        assert!(syncer.sync_now(f, path, Duration::from_secs(30)));
        assert_eq!(errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failed_sync_is_counted_and_fails_the_next_wait_only() {
        let (errors, on_error) = counting();
        let syncer = Syncer::start(on_error).unwrap();
        // fsync of a pipe fails (EINVAL): a stand-in for a failing disk.
        let (_r, w) = std::io::pipe().unwrap();
        let pipe = File::from(OwnedFd::from(w));
        assert!(syncer.sync_later(pipe, "pipe".into()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ok");
        std::fs::write(&path, b"x").unwrap();
        let ok = || File::open(&path).unwrap();
        assert!(!syncer.sync_now(ok(), path.clone(), Duration::from_secs(30)));
        assert_eq!(errors.load(Ordering::Relaxed), 1);
        assert!(syncer.sync_now(ok(), path.clone(), Duration::from_secs(30)));
        assert_eq!(errors.load(Ordering::Relaxed), 1);
    }
}
