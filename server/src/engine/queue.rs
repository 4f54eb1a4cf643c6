//! The bounded request queue between the HTTP handlers and the engine thread, and its
//! admission: a full queue, a closed queue (the engine ended) and work that cannot finish before
//! its deadline (`shedding`) are refused at once.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::shedding::{self, CompletionShare, Outstanding, Policy, ServiceRate, StepSample, Verdict, Work};
use super::{Event, GenerationRequest};
use crate::error::RequestError;

struct Waiting {
    requests: VecDeque<GenerationRequest>,
    /// Set once the engine has ended: nothing is accepted any more.
    closed: bool,
}

pub struct RequestQueue {
    waiting: Mutex<Waiting>,
    arrived: Condvar,
    capacity: usize,
    admission: Arc<Admission>,
}

/// What admission knows: the measured rate and the work accepted and not yet ended.
struct Admission {
    policy: Policy,
    state: Mutex<AdmissionState>,
}

#[derive(Default)]
struct AdmissionState {
    rate: ServiceRate,
    outstanding: Outstanding,
    share: CompletionShare,
}

impl Admission {
    fn lock(&self) -> MutexGuard<'_, AdmissionState> {
        // Plain numbers: a panic while holding the lock leaves them usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An accepted request's share of the outstanding work, held by its handler until the request
/// ends (answered, failed or abandoned): dropping it returns the work.
pub struct WorkTicket {
    admission: Arc<Admission>,
    max_tokens: usize,
    /// Its work still counted: the prompt until the first token, and the expected tokens.
    left: Work,
    generated: usize,
    finished: bool,
}

impl WorkTicket {
    /// One token reached the handler.
    pub fn token(&mut self) {
        self.generated += 1;
        // The first token means the prompt is prefilled.
        let done = Work { prompt_tokens: self.left.prompt_tokens, tokens: self.left.tokens.min(1.0) };
        if done != Work::default() {
            self.left.prompt_tokens = 0.0;
            self.left.tokens -= done.tokens;
            self.admission.lock().outstanding.subtract(done);
        }
    }

    /// The request ended normally: its length teaches the expected share of `max_tokens`.
    pub fn finished(&mut self) {
        self.finished = true;
    }
}

impl Drop for WorkTicket {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.outstanding.end(self.left);
        if self.finished {
            state.share.record(self.generated, self.max_tokens);
        }
    }
}

impl RequestQueue {
    pub fn new(capacity: usize, policy: Policy) -> Self {
        Self {
            waiting: Mutex::new(Waiting { requests: VecDeque::new(), closed: false }),
            arrived: Condvar::new(),
            capacity,
            admission: Arc::new(Admission { policy, state: Mutex::new(AdmissionState::default()) }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Enqueues without waiting. Refused at once: a closed queue (the engine ended), a full
    /// one, a `max_tokens` that cannot fit the deadline even on an idle engine, and work the
    /// estimate says would finish after its deadline.
    pub fn push(&self, request: GenerationRequest) -> Result<WorkTicket, RequestError> {
        let budget = request.deadline.saturating_duration_since(Instant::now());
        let max_tokens = request.params.max_tokens;
        let prompt_tokens = request.prompt.len();
        let mut waiting = self.lock();
        if waiting.closed {
            return Err(RequestError::EngineStopped);
        }
        if waiting.requests.len() >= self.capacity {
            return Err(RequestError::QueueFull { capacity: self.capacity });
        }
        let ticket = self.admit(prompt_tokens, max_tokens, budget)?;
        waiting.requests.push_back(request);
        drop(waiting);
        self.arrived.notify_one();
        Ok(ticket)
    }

    /// Checked before a request is parsed and tokenized: refuses when even a one-token request
    /// would finish after `budget`, because the work already accepted alone takes longer. Under
    /// a flood this answers the doomed requests at once instead of queueing them behind the
    /// tokenizer pool first; `push` still judges the request with its real size.
    pub fn refuse_early(&self, budget: Duration) -> Result<(), RequestError> {
        let policy = self.admission.policy;
        let state = self.admission.lock();
        let one_token = Work { prompt_tokens: 0.0, tokens: 1.0 };
        match shedding::judge(&state.rate, &state.outstanding, one_token, budget, &policy) {
            Verdict::Admit => Ok(()),
            Verdict::Refuse { estimate, retry_after } => Err(overloaded(estimate, retry_after)),
        }
    }

    fn admit(&self, prompt_tokens: usize, max_tokens: usize, budget: Duration) -> Result<WorkTicket, RequestError> {
        let policy = self.admission.policy;
        let mut state = self.admission.lock();
        if policy.factor > 0.0 && shedding::fits_deadline(&state.rate, max_tokens, budget) == Some(false) {
            return Err(RequestError::DeadlineTooShort { max_tokens, seconds: budget.as_secs() });
        }
        let work = Work { prompt_tokens: prompt_tokens as f64, tokens: state.share.expected_tokens(max_tokens) };
        match shedding::judge(&state.rate, &state.outstanding, work, budget, &policy) {
            Verdict::Admit => {}
            Verdict::Refuse { estimate, retry_after } => {
                // What the estimate was made of, for reading it against a step trace.
                tracing::debug!(
                    estimate_s = estimate.as_secs_f64(),
                    step_s = state.rate.step_seconds(),
                    full_batch_step_s = state.rate.step_seconds_at(policy.max_batch_size),
                    prompt_token_s = state.rate.prompt_token_seconds(),
                    outstanding_requests = state.outstanding.requests,
                    outstanding_prompt_tokens = state.outstanding.work.prompt_tokens,
                    outstanding_tokens = state.outstanding.work.tokens,
                    prompt_tokens = work.prompt_tokens,
                    tokens = work.tokens,
                    "admission refused a request"
                );
                return Err(overloaded(estimate, retry_after));
            }
        }
        state.outstanding.accept(work);
        Ok(WorkTicket { admission: self.admission.clone(), max_tokens, left: work, generated: 0, finished: false })
    }

    /// Called by the engine after its warm-up: a one-token forward took `step`, one of
    /// `batch.0` one-token sequences together took `batch.1`, a prefill of `prompt_tokens`
    /// took `prefill`.
    pub fn record_warm_up(
        &self,
        step: Duration,
        batch: Option<(usize, Duration)>,
        prompt_tokens: usize,
        prefill: Duration,
    ) {
        self.admission.lock().rate.record_warm_up(step, batch, prompt_tokens, prefill);
    }

    /// Called by the engine after every step.
    pub fn record_step(&self, step: StepSample) {
        self.admission.lock().rate.record_step(step);
    }

    /// Refuses every later push and answers everything still waiting with `error()`: the
    /// engine has ended, so nothing would ever take them.
    pub fn close(&self, error: impl Fn() -> RequestError) -> usize {
        let left: Vec<GenerationRequest> = {
            let mut waiting = self.lock();
            waiting.closed = true;
            waiting.requests.drain(..).collect()
        };
        self.arrived.notify_all();
        let count = left.len();
        for request in left {
            let _ = request.events.send(Event::Failed(error()));
        }
        count
    }

    pub fn len(&self) -> usize {
        self.lock().requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks until at least `count` requests wait or `until` passes; true if any wait.
    pub fn wait_for(&self, count: usize, until: Instant) -> bool {
        let mut waiting = self.lock();
        while waiting.requests.len() < count && !waiting.closed {
            let now = Instant::now();
            if now >= until {
                break;
            }
            waiting = self.arrived.wait_timeout(waiting, until - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        !waiting.requests.is_empty()
    }

    /// The oldest request if `admit` accepts it.
    pub fn pop_if(&self, admit: impl FnOnce(&GenerationRequest) -> bool) -> Option<GenerationRequest> {
        let mut waiting = self.lock();
        if waiting.requests.front().is_some_and(admit) {
            waiting.requests.pop_front()
        } else {
            None
        }
    }

    /// Removes requests whose client left or whose deadline passed.
    pub fn take_expired(&self, now: Instant) -> Vec<GenerationRequest> {
        let mut waiting = self.lock();
        let (gone, keep): (Vec<_>, Vec<_>) =
            waiting.requests.drain(..).partition(|r| r.events.is_closed() || r.deadline <= now);
        waiting.requests.extend(keep);
        gone
    }

    /// Wakes the engine so it notices shutdown.
    pub fn wake(&self) {
        self.arrived.notify_all();
    }
}

/// How long the idle engine sleeps on the queue before checking shutdown and heartbeat.
pub const IDLE_POLL: Duration = Duration::from_millis(500);

fn overloaded(estimate: Duration, retry_after: Duration) -> RequestError {
    RequestError::Overloaded {
        estimate_seconds: estimate.as_secs_f64().ceil() as u64,
        retry_after_seconds: retry_after.as_secs_f64().ceil() as u64,
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::engine::{GenerationParams, SamplingParams};

    const POLICY: Policy = Policy { factor: 1.0, max_batch_size: 1 };
    const OFF: Policy = Policy { factor: 0.0, max_batch_size: 1 };

    fn decode_step(generated: usize, took: Duration) -> StepSample {
        StepSample { prompt_tokens: 0, generated, took }
    }

    fn request(max_tokens: usize, timeout: Duration) -> (GenerationRequest, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let params = GenerationParams {
            sampling: SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, seed: None },
            max_tokens,
            stop: vec![],
            ignore_eos: true,
        };
        (GenerationRequest { prompt: vec![1], params, arrival: now, deadline: now + timeout, events }, rx)
    }

    #[test]
    fn close_answers_everything_waiting_and_refuses_later_pushes() {
        let queue = RequestQueue::new(10, OFF);
        let (a, mut rx_a) = request(4, Duration::from_secs(30));
        let (b, mut rx_b) = request(4, Duration::from_secs(30));
        let _ta = queue.push(a).unwrap();
        let _tb = queue.push(b).unwrap();
        assert_eq!(queue.close(|| RequestError::EngineStopped), 2);
        for rx in [&mut rx_a, &mut rx_b] {
            assert!(matches!(rx.try_recv(), Ok(Event::Failed(RequestError::EngineStopped))));
        }
        let (c, _rx_c) = request(4, Duration::from_secs(30));
        assert!(matches!(queue.push(c), Err(RequestError::EngineStopped)));
        assert!(!queue.wait_for(1, Instant::now() + Duration::from_secs(5)), "a closed queue does not block");
    }

    #[test]
    fn a_full_queue_refuses() {
        let queue = RequestQueue::new(1, OFF);
        let (a, _ra) = request(4, Duration::from_secs(30));
        let (b, _rb) = request(4, Duration::from_secs(30));
        let _t = queue.push(a).unwrap();
        assert!(matches!(queue.push(b), Err(RequestError::QueueFull { capacity: 1 })));
    }

    #[test]
    fn tickets_count_outstanding_work_and_drive_shedding() {
        let queue = RequestQueue::new(100, POLICY);
        // One sequence at a time, 5 ms per step: 200 tokens/s.
        queue.record_step(decode_step(1, Duration::from_millis(5)));
        let budget = Duration::from_millis(1400);
        // A 1-token prompt (priced as a 5 ms step) and 100 tokens each: the first is admitted
        // by an idle engine; the second waits 0.505 s for the first's work and runs 0.505 s:
        // 1.01 s; the third waits for both: 1.515 s, past its 1.4 s.
        let mut tickets = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..2 {
            let (r, rx) = request(100, budget);
            tickets.push(queue.push(r).unwrap());
            receivers.push(rx);
        }
        let (r, _rx) = request(100, budget);
        let refused = queue.push(r);
        assert!(matches!(refused, Err(RequestError::Overloaded { retry_after_seconds: 1, .. })), "{:?}", refused.err());
        // Tokens already generated and an ended request return their work.
        for _ in 0..100 {
            tickets[0].token();
        }
        tickets[0].finished();
        drop(tickets.remove(0));
        let (r, _rx) = request(100, budget);
        assert!(queue.push(r).is_ok());
    }

    #[test]
    fn the_early_check_refuses_only_when_the_accepted_work_alone_misses_the_deadline() {
        let queue = RequestQueue::new(100, POLICY);
        // 200 tokens/s; nothing accepted: an idle engine admits anything.
        queue.record_step(decode_step(1, Duration::from_millis(5)));
        assert!(queue.refuse_early(Duration::from_millis(10)).is_ok());
        // The accepted work (a 1-token prompt, 100 tokens) drains in 0.505 s and one more
        // token takes 5 ms: a 1 s budget passes, a 0.4 s one cannot.
        let (r, _rx) = request(100, Duration::from_secs(30));
        let _ticket = queue.push(r).unwrap();
        assert!(queue.refuse_early(Duration::from_secs(1)).is_ok());
        let refused = queue.refuse_early(Duration::from_millis(400));
        assert!(matches!(refused, Err(RequestError::Overloaded { estimate_seconds: 1, .. })), "{refused:?}");
    }

    #[test]
    fn max_tokens_beyond_the_deadline_at_the_fastest_step_is_refused() {
        let queue = RequestQueue::new(100, POLICY);
        queue.record_step(decode_step(1, Duration::from_millis(10)));
        let (r, _rx) = request(200, Duration::from_secs(1));
        assert!(matches!(queue.push(r), Err(RequestError::DeadlineTooShort { max_tokens: 200, .. })));
        let (r, _rx) = request(90, Duration::from_secs(1));
        assert!(queue.push(r).is_ok());
    }
}
