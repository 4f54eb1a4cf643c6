//! A small persistent compute pool: the engine thread plus N-1 workers split each matmul.
//!
//! Matmuls come every few microseconds during a forward step, far faster than a thread can be
//! woken, so workers spin briefly between jobs and only then sleep. The spin is bounded so an
//! idle server costs nothing.
//!
//! A task that panics (on a worker or on the calling thread) is caught where it runs and still
//! counted as done; `run` waits for every task, and only then re-raises the first panic on the
//! calling thread, where the engine's per-step guard reports it as a failed step. So no thread
//! ever calls the job's closure after `run` has returned or unwound.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
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
    /// The first panic of a task, re-raised by `run` once every task is done.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `f` points to a `Sync` closure and is called only for a claimed index below `tasks`.
// Every such call is counted in `remaining` after it returns or panics (the panic is caught
// in `drain`), and `run` neither returns nor unwinds before `remaining` is zero, so the
// closure outlives every call; a worker that still holds the `Arc` afterwards claims no index.
unsafe impl Send for JobState {}
unsafe impl Sync for JobState {}

impl JobState {
    fn drain(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.tasks {
                return;
            }
            // SAFETY: `i < tasks` was claimed by this thread alone and `run` is still waiting
            // for it (see the Send/Sync note above), so the closure is alive.
            let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { (*self.f)(i) }));
            if let Err(payload) = outcome {
                let mut first = self.panic.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert(payload);
            }
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

    /// Runs `f(0..tasks)` across the pool and returns when every task is done. If a task
    /// panicked, the first panic is re-raised here after every task has finished.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || tasks <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only while this call runs: it returns (or re-raises a
        // task's panic) only after every task has finished (see JobState).
        let f: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        let job = Arc::new(JobState {
            f,
            tasks,
            next: AtomicUsize::new(0),
            remaining: AtomicUsize::new(tasks),
            panic: Mutex::new(None),
        });
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
        let panic = job.panic.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(payload) = panic {
            resume_unwind(payload);
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
    fn a_panicking_task_is_reraised_after_every_task_finished_and_the_pool_lives_on() {
        let pool = ComputePool::new(3);
        for panicking in [0, 5, 36] {
            let done: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                pool.run(done.len(), &|i| {
                    if i == panicking {
                        panic!("task {i} failed");
                    }
                    done[i].fetch_add(1, Ordering::Relaxed);
                })
            }));
            let payload = outcome.expect_err("the task's panic reaches the caller");
            assert_eq!(
                payload.downcast_ref::<String>().map(String::as_str),
                Some(&*format!("task {panicking} failed"))
            );
            // Whichever thread ran the panicking task, every other task ran exactly once before
            // `run` unwound (the closure and `done` were still alive for all of them).
            for (i, d) in done.iter().enumerate() {
                assert_eq!(d.load(Ordering::Relaxed), usize::from(i != panicking), "task {i}");
            }
        }
        let hits = AtomicUsize::new(0);
        pool.run(10, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 10, "the pool still works after a panic");
    }

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
