//! A small, bounded pool for CPU-heavy request work (large decodes, recovery-secret hashing).
//!
//! The runtime's workers serve every connection; a request that computes for milliseconds on one
//! of them delays every other request on it, `/healthz` included. Work that may be heavy runs on
//! tokio's blocking threads instead, and only while holding one of a few permits: however many
//! such requests arrive, at most that many compute at once, the rest wait a bounded time and then
//! answer `503 busy`. Nothing is started that cannot finish: a request that gives up waiting has
//! done no work.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Permits for one kind of heavy work, and how long a request waits for one.
#[derive(Debug, Clone)]
pub struct Offload {
    what: &'static str,
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Offload {
    /// `slots` computations of kind `what` (named in `busy` answers) at once; a request waits up
    /// to `wait` for a slot.
    #[must_use]
    pub fn new(what: &'static str, slots: usize, wait: Duration) -> Offload {
        Offload {
            what,
            permits: Arc::new(Semaphore::new(slots.max(1))),
            wait,
        }
    }

    /// One slot per core but one, so that one core always stays with the runtime.
    #[must_use]
    pub fn per_spare_core(what: &'static str, wait: Duration) -> Offload {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Offload::new(what, cores.saturating_sub(1), wait)
    }

    /// Runs `work` on a blocking thread once a slot is free; `Busy` if none comes free in time.
    pub async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| Error::Busy(self.what))?
            .map_err(|_| Error::Busy(self.what))?;
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            work()
        })
        .await
        .map_err(|e| Error::Internal(format!("{} failed: {e}", self.what)))
    }

    /// Slots free right now (for metrics and tests).
    #[must_use]
    pub fn free(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_answers_busy_and_runs_nothing() {
        let pool = Offload::new("tests", 1, Duration::from_millis(50));
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let busy = pool.clone();
        let first = tokio::spawn(async move { busy.run(move || hold_rx.recv().is_ok()).await });
        while pool.free() > 0 {
            tokio::task::yield_now().await;
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let second = pool
            .run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .await;
        assert!(matches!(second, Err(Error::Busy("tests"))), "{second:?}");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        hold_tx.send(()).expect("first is waiting");
        assert!(matches!(first.await, Ok(Ok(true))));
        assert_eq!(pool.free(), 1);
    }
}
