//! A small persistent compute pool: the engine thread plus N-1 workers split each matmul.
//!
//! Matmuls come every few microseconds during a forward step, far faster than a thread can be
//! woken, so workers spin briefly between jobs and only then sleep. The spin is bounded so an
//! idle server costs nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

type Job = *const (dyn Fn(usize) + Sync);

/// One `run` call: workers claim task indices until they are used up.
struct JobState {
    f: Job,
    tasks: usize,
    next: AtomicUsize,
    remaining: AtomicUsize,
}

// `f` is called only for a claimed index below `tasks`; while any such index is unfinished,
// `run` has not returned, so the closure it points to is alive.
unsafe impl Send for JobState {}
unsafe impl Sync for JobState {}

impl JobState {
    fn drain(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.tasks {
                return;
            }
            // SAFETY: see the Send/Sync note above.
            unsafe { (*self.f)(i) };
            self.remaining.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct Shared {
    current: Mutex<Option<Arc<JobState>>>,
    generation: AtomicU64,
    sleeping: AtomicUsize,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

pub struct ComputePool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ComputePool {
    /// A pool using `threads` threads in total (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            sleeping: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .filter_map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new().name(format!("compute-{i}")).spawn(move || worker(&shared)).ok()
            })
            .collect();
        Self { shared, workers }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0..tasks)` across the pool and returns when every task is done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || tasks <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call (see JobState).
        let f: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        let job = Arc::new(JobState { f, tasks, next: AtomicUsize::new(0), remaining: AtomicUsize::new(tasks) });
        *s.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(job.clone());
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        job.drain();
        while job.remaining.load(Ordering::Acquire) > 0 {
            std::hint::spin_loop();
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let started = Instant::now();
        let mut generation = s.generation.load(Ordering::SeqCst);
        while generation == seen && started.elapsed() < SPIN && !s.shutdown.load(Ordering::Relaxed) {
            std::hint::spin_loop();
            generation = s.generation.load(Ordering::SeqCst);
        }
        if generation == seen {
            let mut guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.sleeping.fetch_add(1, Ordering::SeqCst);
            while s.generation.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                guard = s.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
            }
            s.sleeping.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            if s.shutdown.load(Ordering::SeqCst) {
                return;
            }
            generation = s.generation.load(Ordering::SeqCst);
        }
        seen = generation;
        let job = s.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(job) = job {
            job.drain();
        }
    }
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once_across_many_jobs() {
        let pool = ComputePool::new(3);
        for round in 0..200 {
            let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
            pool.run(hits.len(), &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "round {round}");
            if round % 50 == 0 {
                // Let the workers fall asleep so the wake-up path runs too.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}
