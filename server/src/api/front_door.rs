//! The front door: tokenization and chat-template rendering run on a bounded set of blocking
//! threads (like TGI's validation workers), never on the async workers that answer `/health`,
//! `/ready` and `/metrics`. Beyond `--max-tokenizer-queue` waiting requests, new ones are
//! refused at once with 429.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::error::{RequestError, RequestResult};

pub struct FrontDoor {
    workers: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Decrements the waiting count however the wait ends (a client that leaves drops the future).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl FrontDoor {
    pub fn new(workers: usize, max_waiting: usize) -> Self {
        Self { workers: Semaphore::new(workers.max(1)), waiting: AtomicUsize::new(0), max_waiting }
    }

    /// Runs `work` on a blocking thread once a worker is free; 429 when too many wait.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> RequestResult<T> + Send + 'static,
    ) -> RequestResult<T> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(RequestError::FrontDoorFull { capacity: self.max_waiting });
        }
        let waiting = Waiting(&self.waiting);
        let permit =
            self.workers.acquire().await.map_err(|_| RequestError::Internal("the tokenizer pool is closed".into()))?;
        drop(waiting);
        let outcome = tokio::task::spawn_blocking(work).await;
        drop(permit);
        outcome.map_err(|e| RequestError::Internal(format!("tokenizer task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn work_runs_and_its_error_comes_back() {
        let door = FrontDoor::new(1, 4);
        assert_eq!(door.run(|| Ok(7)).await.unwrap(), 7);
        let err = door.run(|| -> RequestResult<()> { Err(RequestError::invalid("bad", None)) }).await.unwrap_err();
        assert_eq!(err.status_code(), 400);
    }

    #[tokio::test]
    async fn beyond_the_waiting_limit_requests_are_refused_at_once() {
        let door = Arc::new(FrontDoor::new(1, 2));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        // One holds the only worker; two more wait; the fourth is refused.
        let mut held = Vec::new();
        for _ in 0..3 {
            let door = door.clone();
            let rx = release_rx.clone();
            held.push(tokio::spawn(async move {
                door.run(move || {
                    let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                    Ok(())
                })
                .await
            }));
        }
        // Wait (bounded) until all three are inside: one running, two waiting.
        for _ in 0..200 {
            if door.waiting.load(Ordering::Acquire) == 2 && door.workers.available_permits() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(door.waiting.load(Ordering::Acquire), 2);
        let refused = door.run(|| Ok(())).await.unwrap_err();
        assert!(matches!(refused, RequestError::FrontDoorFull { capacity: 2 }), "{refused}");
        assert_eq!(refused.status_code(), 429);
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        for h in held {
            h.await.unwrap().unwrap();
        }
        assert_eq!(door.waiting.load(Ordering::Acquire), 0);
    }
}
