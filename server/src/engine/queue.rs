//! The bounded request queue between the HTTP handlers and the engine thread.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::GenerationRequest;
use crate::error::Error;

pub struct RequestQueue {
    waiting: Mutex<VecDeque<GenerationRequest>>,
    arrived: Condvar,
    capacity: usize,
}

impl RequestQueue {
    pub fn new(capacity: usize) -> Self {
        Self { waiting: Mutex::new(VecDeque::new()), arrived: Condvar::new(), capacity }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<GenerationRequest>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Enqueues without waiting; a full queue refuses at once.
    pub fn push(&self, request: GenerationRequest) -> Result<(), Error> {
        let mut waiting = self.lock();
        if waiting.len() >= self.capacity {
            return Err(Error::QueueFull { capacity: self.capacity });
        }
        waiting.push_back(request);
        drop(waiting);
        self.arrived.notify_one();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks until at least `count` requests wait or `until` passes; true if any wait.
    pub fn wait_for(&self, count: usize, until: Instant) -> bool {
        let mut waiting = self.lock();
        while waiting.len() < count {
            let now = Instant::now();
            if now >= until {
                break;
            }
            waiting = self.arrived.wait_timeout(waiting, until - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        !waiting.is_empty()
    }

    /// The oldest request if `admit` accepts it.
    pub fn pop_if(&self, admit: impl FnOnce(&GenerationRequest) -> bool) -> Option<GenerationRequest> {
        let mut waiting = self.lock();
        if waiting.front().is_some_and(admit) {
            waiting.pop_front()
        } else {
            None
        }
    }

    /// Removes requests whose client left or whose deadline passed.
    pub fn take_expired(&self, now: Instant) -> Vec<GenerationRequest> {
        let mut waiting = self.lock();
        let (gone, keep): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|r| r.events.is_closed() || r.deadline <= now);
        waiting.extend(keep);
        gone
    }

    /// Wakes the engine so it notices shutdown.
    pub fn wake(&self) {
        self.arrived.notify_all();
    }
}

/// How long the idle engine sleeps on the queue before checking shutdown and heartbeat.
pub const IDLE_POLL: Duration = Duration::from_millis(500);
