//! Deadline-aware admission: from the measured service rate and the work already accepted,
//! estimate when a new request would finish and refuse it at once (429 + Retry-After) when that
//! is past its deadline, instead of accepting it and timing it out later.
//!
//! The model is a fluid one, in seconds of engine time:
//! - every engine step reports its prompt tokens, the tokens it generated and how long its whole
//!   cycle took in wall time (scheduling, forward, sampling, sending: what clients wait for;
//!   the forward alone leaves out the host work and the CPU the HTTP side takes);
//! - decode-only steps give the time of a step by its batch (the sequences it advanced, one
//!   token each), each batch size averaged on its own, and sizes not seen are read off the
//!   line between the nearest ones measured: a step of 32 sequences costs far less than 32
//!   steps of one, so a rate measured at one size says little about another; steps with
//!   prompt tokens give the cost of one prompt token (what the step took beyond its decode);
//! - every accepted request adds its prompt (until its first token: prefill done) and its
//!   expected tokens (`max_tokens` x the observed share that requests really generate) to the
//!   outstanding work until it ends;
//! - batches of up to `--max-batch-size` start in arrival order: behind `n` others a request
//!   runs beside the last `n mod B` of them (all of them while `n < B`), so only the rest is
//!   work ahead, drained at the throughput of a full batch; then its tokens come one per step
//!   of the batch it runs in, and that batch prefills its prompt and those of the others
//!   (typical prompts) that start with it:
//!   `estimate = share ahead x (prompts x prompt cost + tokens / throughput(batch ahead))`
//!   `         + tokens x step(batch)`
//!   `         + (own prompt + (batch - 1) x typical prompt) x prompt cost`,
//!   with `share ahead = (n - n mod B) / n` and `batch = min(B, n + 1)`.
//!
//! Prefill is counted on its own because it is not in proportion to the tokens generated: chat
//! prompts of a few dozen tokens already take as long as the answers in a flood of short
//! requests, and one long prompt (RAG) outweighs many answers. Before the first request the
//! engine's warm-up gives first rates: one sequence's step, a full batch's step, a short
//! prefill (lazy start-up included: on the slow side). An idle engine (nothing accepted)
//! admits any request: there is no work to shed in its favour.
//!
//! The knob is `--shed-factor` (SHED_FACTOR, default 1.25): a request is refused when
//! `factor x estimate` exceeds the time left to its deadline; the default keeps a fifth of the
//! deadline as margin for a noisy machine (a slowdown after admission), 1 admits up to the
//! estimate itself, 0 turns shedding off.

use std::collections::BTreeMap;
use std::time::Duration;

/// Weight of the newest step in the moving averages.
const EWMA_WEIGHT: f64 = 0.2;

/// What one engine step did, as admission measures it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSample {
    /// Prompt tokens the step prefilled.
    pub prompt_tokens: usize,
    /// Tokens it generated (one per sampled sequence).
    pub generated: usize,
    /// Its whole cycle, in wall time.
    pub took: Duration,
}

/// The engine's measured speed, updated after every step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceRate {
    /// Seconds of a decode step by the sequences it advanced (its batch), each averaged on
    /// its own: a step of 32 sequences costs far less than 32 steps of one (the weights are
    /// read once per step), so a rate measured at one batch size says little about another.
    steps: BTreeMap<usize, f64>,
    /// The fastest decode step seen: the best case any request can count on.
    fastest_step_seconds: Option<f64>,
    /// Seconds one prompt token adds to a step.
    prompt_token_seconds: Option<f64>,
}

impl ServiceRate {
    /// Records one step.
    pub fn record_step(&mut self, step: StepSample) {
        let seconds = step.took.as_secs_f64().max(1e-6);
        if step.prompt_tokens > 0 {
            // What the step took beyond the decode step it also ran (if it generated).
            let decode = if step.generated > 0 { self.step_seconds_at(step.generated).unwrap_or(0.0) } else { 0.0 };
            let per_token = (seconds - decode).max(0.0) / step.prompt_tokens as f64;
            self.prompt_token_seconds = Some(ewma(self.prompt_token_seconds, per_token));
            return;
        }
        if step.generated == 0 {
            return;
        }
        let averaged = ewma(self.steps.get(&step.generated).copied(), seconds);
        self.steps.insert(step.generated, averaged);
        self.fastest_step_seconds = Some(self.fastest_step_seconds.map_or(seconds, |f| f.min(seconds)));
    }

    /// Records the warm-up: a decode-sized forward of one sequence (`step`, lazy start-up
    /// included: on the slow side), one of `batch.0` sequences together when it ran, and a
    /// prefill of `prompt_tokens` (`prefill`). Not a best case, so it never refuses a
    /// `max_tokens` on its own.
    pub fn record_warm_up(
        &mut self,
        step: Duration,
        batch: Option<(usize, Duration)>,
        prompt_tokens: usize,
        prefill: Duration,
    ) {
        self.steps.insert(1, step.as_secs_f64().max(1e-6));
        if let Some((sequences, took)) = batch.filter(|(sequences, _)| *sequences > 1) {
            self.steps.insert(sequences, took.as_secs_f64().max(1e-6));
        }
        if prompt_tokens > 0 {
            self.prompt_token_seconds = Some(prefill.as_secs_f64() / prompt_tokens as f64);
        }
    }

    /// Seconds of a decode step of one sequence (None before anything is measured).
    pub fn step_seconds(&self) -> Option<f64> {
        self.step_seconds_at(1)
    }

    /// Seconds of a decode step of `batch` sequences: measured, or read off the line between
    /// the nearest batch sizes measured below and above. Above every measured size the
    /// throughput of the largest is assumed to stay (the slow side: it only grows with the
    /// batch); below every one, the smallest one's step (a smaller batch is no slower).
    pub fn step_seconds_at(&self, batch: usize) -> Option<f64> {
        let batch = batch.max(1);
        if let Some(exact) = self.steps.get(&batch) {
            return Some(*exact);
        }
        let below = self.steps.range(..batch).next_back();
        let above = self.steps.range(batch..).next();
        match (below, above) {
            (Some((&lo, &t_lo)), Some((&hi, &t_hi))) => {
                let along = (batch - lo) as f64 / (hi - lo) as f64;
                Some(t_lo + along * (t_hi - t_lo))
            }
            (Some((&lo, &t_lo)), None) => Some(t_lo * batch as f64 / lo as f64),
            (None, Some((_, &t_hi))) => Some(t_hi),
            (None, None) => None,
        }
    }

    pub fn fastest_step_seconds(&self) -> Option<f64> {
        self.fastest_step_seconds
    }

    /// Tokens per second with `batch` sequences running.
    pub fn tokens_per_second_at(&self, batch: usize) -> Option<f64> {
        let rate = batch.max(1) as f64 / self.step_seconds_at(batch)?;
        (rate > 0.0).then_some(rate)
    }

    /// Seconds per prompt token; before any prompt step, one decode step each (the slow side).
    pub fn prompt_token_seconds(&self) -> Option<f64> {
        self.prompt_token_seconds.or(self.step_seconds())
    }
}

fn ewma(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(old) => old + EWMA_WEIGHT * (new - old),
        None => new,
    }
}

/// One request's work, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Work {
    /// Prompt tokens still to prefill.
    pub prompt_tokens: f64,
    /// Tokens still expected to be generated.
    pub tokens: f64,
}

/// The work already accepted (queued and running).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outstanding {
    pub requests: usize,
    /// The sum of the accepted requests' work.
    pub work: Work,
    /// A typical prompt's length (averaged over accepted requests): the prompts of the others
    /// in a new request's batch.
    pub typical_prompt_tokens: f64,
}

impl Outstanding {
    /// A request accepted with `work`.
    pub fn accept(&mut self, work: Work) {
        self.typical_prompt_tokens = if self.requests == 0 && self.typical_prompt_tokens == 0.0 {
            work.prompt_tokens
        } else {
            ewma(Some(self.typical_prompt_tokens), work.prompt_tokens)
        };
        self.requests += 1;
        self.work.prompt_tokens += work.prompt_tokens;
        self.work.tokens += work.tokens;
    }

    /// Work done or given up: `done` leaves the sum (never below zero).
    pub fn subtract(&mut self, done: Work) {
        self.work.prompt_tokens = (self.work.prompt_tokens - done.prompt_tokens).max(0.0);
        self.work.tokens = (self.work.tokens - done.tokens).max(0.0);
    }

    /// A request ended with `left` of its work not done.
    pub fn end(&mut self, left: Work) {
        self.requests = self.requests.saturating_sub(1);
        self.subtract(left);
    }
}

/// What admission decides for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Admit,
    /// Refused: it would finish after its deadline. `retry_after` is when, at the current
    /// rate, enough of the work ahead has drained for it to fit.
    Refuse {
        estimate: Duration,
        retry_after: Duration,
    },
}

/// The admission knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// `--shed-factor`; 0 disables shedding.
    pub factor: f64,
    /// `--max-batch-size`: how many requests run (and prefill) together.
    pub max_batch_size: usize,
}

/// Seconds until a request with `own` work would finish, or None while the rate is unknown.
pub fn estimate_finish(rate: &ServiceRate, load: &Outstanding, own: Work, policy: &Policy) -> Option<Duration> {
    let max_batch = policy.max_batch_size.max(1);
    let batch = max_batch.min(load.requests + 1);
    let batch_step = rate.step_seconds_at(batch)?;
    let prompt_token = rate.prompt_token_seconds().unwrap_or(batch_step);
    // Batches start in arrival order: behind n others it runs beside the last n mod B of them
    // (all of them while n < B), so only the rest is work ahead; it drains at the rate of the
    // batches it runs in.
    let mates = load.requests % max_batch;
    let ahead_share = if load.requests == 0 { 0.0 } else { (load.requests - mates) as f64 / load.requests as f64 };
    let draining = max_batch.min(load.requests.max(1));
    let throughput = rate.tokens_per_second_at(draining).unwrap_or(draining as f64 / batch_step);
    let ahead = ahead_share * (load.work.prompt_tokens * prompt_token + load.work.tokens / throughput);
    // Its own tokens come one per step of the batch it runs in, and that batch prefills its
    // prompt and those of the others (typical prompts) that start with it.
    let batch_prompts = own.prompt_tokens + (batch - 1) as f64 * load.typical_prompt_tokens;
    let seconds = ahead + own.tokens * batch_step + batch_prompts * prompt_token;
    Some(Duration::from_secs_f64(seconds.max(0.0)))
}

/// Admit or refuse a request with `own` work and `budget` left before its deadline.
pub fn judge(rate: &ServiceRate, load: &Outstanding, own: Work, budget: Duration, policy: &Policy) -> Verdict {
    if policy.factor <= 0.0 {
        return Verdict::Admit;
    }
    if load.requests == 0 {
        // Nothing ahead to wait for: an idle engine always tries (a `max_tokens` that cannot
        // fit even at the fastest step is refused by `fits_deadline`), and this is also how
        // the first request is served before anything is measured.
        return Verdict::Admit;
    }
    let Some(estimate) = estimate_finish(rate, load, own, policy) else {
        return Verdict::Refuse { estimate: budget, retry_after: Duration::from_secs(1) };
    };
    let needed = estimate.mul_f64(policy.factor);
    if needed <= budget {
        return Verdict::Admit;
    }
    let retry_after = (needed - budget).max(Duration::from_secs(1));
    Verdict::Refuse { estimate, retry_after }
}

/// Whether `max_tokens` can be generated before the deadline even on an idle engine at the
/// fastest step measured; None while nothing is measured.
pub fn fits_deadline(rate: &ServiceRate, max_tokens: usize, budget: Duration) -> Option<bool> {
    let fastest = rate.fastest_step_seconds()?;
    Some(Duration::from_secs_f64(max_tokens as f64 * fastest) <= budget)
}

/// The share of `max_tokens` that requests actually generate (EOS and stop strings end most
/// early), so the outstanding work is not counted at its worst case. Starts at 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompletionShare(f64);

impl Default for CompletionShare {
    fn default() -> Self {
        CompletionShare(1.0)
    }
}

impl CompletionShare {
    /// The smallest share assumed, so a run of one-token answers cannot make the estimate
    /// treat long requests as free.
    const FLOOR: f64 = 0.1;

    pub fn record(&mut self, generated: usize, max_tokens: usize) {
        if max_tokens == 0 {
            return;
        }
        let share = (generated as f64 / max_tokens as f64).clamp(0.0, 1.0);
        self.0 = ewma(Some(self.0), share);
    }

    pub fn expected_tokens(&self, max_tokens: usize) -> f64 {
        max_tokens as f64 * self.0.max(Self::FLOOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { factor: 1.0, max_batch_size: 1 };

    fn decode(generated: usize, ms: u64) -> StepSample {
        StepSample { prompt_tokens: 0, generated, took: Duration::from_millis(ms) }
    }

    fn measured(step_ms: u64, tokens_per_step: usize) -> ServiceRate {
        let mut rate = ServiceRate::default();
        rate.record_step(decode(tokens_per_step, step_ms));
        rate
    }

    fn tokens(tokens: f64) -> Work {
        Work { prompt_tokens: 0.0, tokens }
    }

    fn load(requests: usize, tokens: f64) -> Outstanding {
        Outstanding { requests, work: Work { prompt_tokens: 0.0, tokens }, typical_prompt_tokens: 0.0 }
    }

    #[test]
    fn an_idle_engine_needs_only_the_requests_own_tokens() {
        // 10 ms steps, 4 tokens each: 400 tokens/s; 100 tokens take 1 s at one per step.
        let rate = measured(10, 4);
        let idle = Outstanding::default();
        assert_eq!(estimate_finish(&rate, &idle, tokens(100.0), &POLICY), Some(Duration::from_secs(1)));
        assert_eq!(judge(&rate, &idle, tokens(100.0), Duration::from_secs(2), &POLICY), Verdict::Admit);
        // Idle, it is tried even when the estimate says it is late; behind one other, refused.
        assert_eq!(judge(&rate, &idle, tokens(100.0), Duration::from_millis(900), &POLICY), Verdict::Admit);
        let one = load(1, 0.0);
        assert!(matches!(
            judge(&rate, &one, tokens(100.0), Duration::from_millis(900), &POLICY),
            Verdict::Refuse { .. }
        ));
    }

    #[test]
    fn accepted_work_must_drain_first_at_the_measured_throughput() {
        let rate = measured(10, 4);
        let policy = Policy { factor: 1.0, max_batch_size: 4 };
        // 40 ahead in batches of 4: none shares its batch (40 mod 4 = 0).
        let ahead = load(40, 3_600.0);
        // 3600 / 400 = 9 s ahead, then 100 tokens at 10 ms: 10 s.
        assert_eq!(estimate_finish(&rate, &ahead, tokens(100.0), &policy), Some(Duration::from_secs(10)));
        assert_eq!(judge(&rate, &ahead, tokens(100.0), Duration::from_secs(30), &policy), Verdict::Admit);
        let refused = judge(&rate, &ahead, tokens(100.0), Duration::from_secs(4), &policy);
        assert_eq!(refused, Verdict::Refuse { estimate: Duration::from_secs(10), retry_after: Duration::from_secs(6) });
    }

    #[test]
    fn prompts_ahead_and_the_prefill_of_its_batch_count() {
        // Decode: 10 ms steps of 4 tokens. A step with 100 prompt tokens that also decoded took
        // 110 ms: 1 ms per prompt token.
        let mut rate = measured(10, 4);
        rate.record_step(StepSample { prompt_tokens: 100, generated: 4, took: Duration::from_millis(110) });
        assert!((rate.prompt_token_seconds().unwrap() - 0.001).abs() < 1e-9);
        let policy = Policy { factor: 1.0, max_batch_size: 4 };
        let ahead = Outstanding {
            requests: 10,
            work: Work { prompt_tokens: 2_000.0, tokens: 400.0 },
            typical_prompt_tokens: 100.0,
        };
        // 2 of the 10 start with it (10 mod 4), so 8/10 of 2000 x 1 ms + 400 / 400 = 2.4 s is
        // ahead; 10 tokens x 10 ms; a batch of 4 prefills its 500-token prompt and 3 typical
        // 100-token ones: 0.8 s. 3.3 s in all.
        let own = Work { prompt_tokens: 500.0, tokens: 10.0 };
        assert_eq!(estimate_finish(&rate, &ahead, own, &policy), Some(Duration::from_millis(3_300)));
        // Without the prompts the same request looks 2.4 s sooner.
        let no_prompts =
            Outstanding { work: Work { prompt_tokens: 0.0, tokens: 400.0 }, typical_prompt_tokens: 0.0, ..ahead };
        let own_tokens = Work { prompt_tokens: 0.0, tokens: 10.0 };
        assert_eq!(estimate_finish(&rate, &no_prompts, own_tokens, &policy), Some(Duration::from_millis(900)));
    }

    #[test]
    fn the_batch_term_counts_only_the_requests_there_are() {
        let mut rate = measured(10, 4);
        rate.record_step(StepSample { prompt_tokens: 100, generated: 0, took: Duration::from_millis(100) });
        let policy = Policy { factor: 1.0, max_batch_size: 32 };
        let one_ahead = Outstanding { requests: 1, work: Work::default(), typical_prompt_tokens: 100.0 };
        // Batch of 2: its own 100 prompt tokens and one typical 100: 0.2 s.
        let own = Work { prompt_tokens: 100.0, tokens: 0.0 };
        assert_eq!(estimate_finish(&rate, &one_ahead, own, &policy), Some(Duration::from_millis(200)));
    }

    #[test]
    fn its_own_tokens_take_the_step_of_the_batch_it_joins() {
        // Measured only at 4 sequences, 10 ms steps (400 tokens/s). Joining 31 others it runs
        // in a batch of 32, assumed at no more than that throughput: 32 / 400 = 80 ms a step.
        let rate = measured(10, 4);
        let policy = Policy { factor: 1.0, max_batch_size: 32 };
        let ahead = load(31, 0.0);
        assert_eq!(estimate_finish(&rate, &ahead, tokens(10.0), &policy), Some(Duration::from_millis(800)));
        // Alone, its own measured step applies.
        assert_eq!(
            estimate_finish(&rate, &Outstanding::default(), tokens(10.0), &policy),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn the_factor_sheds_earlier_and_zero_turns_shedding_off() {
        let rate = measured(10, 4);
        let ahead = load(40, 3_600.0);
        let strict = Policy { factor: 2.0, ..POLICY };
        assert!(matches!(
            judge(&rate, &ahead, tokens(100.0), Duration::from_secs(15), &strict),
            Verdict::Refuse { .. }
        ));
        let off = Policy { factor: 0.0, ..POLICY };
        assert_eq!(judge(&rate, &ahead, tokens(1e9), Duration::from_millis(1), &off), Verdict::Admit);
    }

    #[test]
    fn retry_after_is_at_least_a_second() {
        let rate = measured(10, 4);
        let one = load(1, 0.0);
        // 1.01 s against a 1 s budget.
        let verdict = judge(&rate, &one, tokens(101.0), Duration::from_secs(1), &POLICY);
        assert!(matches!(verdict, Verdict::Refuse { retry_after, .. } if retry_after == Duration::from_secs(1)));
    }

    #[test]
    fn unmeasured_admits_one_request_at_a_time() {
        let rate = ServiceRate::default();
        let idle = Outstanding::default();
        assert_eq!(judge(&rate, &idle, tokens(1e6), Duration::from_secs(1), &POLICY), Verdict::Admit);
        let busy = load(1, 1.0);
        assert!(matches!(judge(&rate, &busy, tokens(1.0), Duration::from_secs(30), &POLICY), Verdict::Refuse { .. }));
        assert_eq!(fits_deadline(&rate, 10, Duration::from_secs(1)), None);
    }

    #[test]
    fn prefill_only_steps_give_no_step_time() {
        let mut rate = ServiceRate::default();
        rate.record_step(StepSample { prompt_tokens: 50, generated: 0, took: Duration::from_millis(50) });
        assert_eq!(estimate_finish(&rate, &Outstanding::default(), tokens(1.0), &POLICY), None, "no decode step yet");
        assert_eq!(rate.prompt_token_seconds(), Some(0.001));
    }

    #[test]
    fn step_times_are_kept_per_batch_size_and_read_off_the_line_between() {
        // Steps of 1 sequence in 10 ms and of 32 in 40 ms alternate: each keeps its own time.
        let mut rate = ServiceRate::default();
        for _ in 0..20 {
            rate.record_step(decode(32, 40));
            rate.record_step(decode(1, 10));
        }
        let at = |batch| rate.step_seconds_at(batch).unwrap();
        assert!((at(1) - 0.010).abs() < 1e-9 && (at(32) - 0.040).abs() < 1e-9);
        // 16 is 15/31 of the way from 1 to 32.
        assert!((at(16) - (0.010 + 15.0 / 31.0 * 0.030)).abs() < 1e-9, "{}", at(16));
        assert!((rate.tokens_per_second_at(32).unwrap() - 800.0).abs() < 1e-6);
        // Past the largest measured batch the throughput stays that of 32: 64 at 80 ms.
        assert!((at(64) - 0.080).abs() < 1e-9);
    }

    /// The e2e autoscaling failure: a burst of 8 after single requests, measured then at one
    /// sequence per 31 ms (32 tokens/s), was priced as if its batch ran at that throughput
    /// (24 s for the sixth request, refused) while a batch of 8 steps in about 35 ms. With the
    /// warm-up's full-batch step, the batch it joins is priced at its own step.
    #[test]
    fn a_burst_after_single_requests_is_priced_at_the_batch_it_runs_in() {
        let mut rate = ServiceRate::default();
        rate.record_warm_up(
            Duration::from_millis(31),
            Some((32, Duration::from_millis(62))),
            32,
            Duration::from_millis(200),
        );
        let policy = Policy { factor: 1.25, max_batch_size: 32 };
        let five = Outstanding {
            requests: 5,
            work: Work { prompt_tokens: 128.0, tokens: 320.0 },
            typical_prompt_tokens: 25.0,
        };
        let own = Work { prompt_tokens: 26.0, tokens: 64.0 };
        // All five start with it: nothing ahead; 64 tokens at the step of 6 (31 + 5/31 x 31
        // ms = 36 ms) and its batch's 151 prompt tokens at 6.25 ms: about 3.3 s.
        let estimate = estimate_finish(&rate, &five, own, &policy).unwrap().as_secs_f64();
        let want = 64.0 * (0.031 + 5.0 / 31.0 * 0.031) + 151.0 * 0.2 / 32.0;
        assert!((estimate - want).abs() < 1e-6, "{estimate} vs {want}");
        assert_eq!(judge(&rate, &five, own, Duration::from_secs(30), &policy), Verdict::Admit);
    }

    /// A flood in batches of 32: behind 100 others it runs in the fourth batch, after three
    /// whole batches (96 of the 100) have drained.
    #[test]
    fn in_a_flood_only_the_whole_batches_ahead_are_waited_for() {
        let rate = measured(64, 32);
        let policy = Policy { factor: 1.0, max_batch_size: 32 };
        let flood = load(100, 6_400.0);
        // 96/100 x 6400 tokens at 500 tokens/s = 12.288 s, then 64 tokens at 64 ms = 4.096 s.
        let estimate = estimate_finish(&rate, &flood, tokens(64.0), &policy).unwrap().as_secs_f64();
        assert!((estimate - 16.384).abs() < 1e-6, "{estimate}");
    }

    #[test]
    fn averages_follow_recent_steps() {
        let mut rate = measured(10, 4);
        rate.record_step(decode(4, 20));
        // 10 + 0.2 x (20 - 10) = 12 ms.
        assert!((rate.step_seconds().unwrap() - 0.012).abs() < 1e-9);
        assert!((rate.fastest_step_seconds().unwrap() - 0.010).abs() < 1e-9);
        rate.record_step(StepSample { prompt_tokens: 10, generated: 4, took: Duration::from_millis(50) });
        assert!((rate.step_seconds().unwrap() - 0.012).abs() < 1e-9, "prompt steps keep the decode step time");
    }

    #[test]
    fn the_warm_up_gives_a_rate_but_no_best_case() {
        let mut rate = ServiceRate::default();
        rate.record_warm_up(Duration::from_millis(100), None, 0, Duration::ZERO);
        assert!(estimate_finish(&rate, &Outstanding::default(), tokens(10.0), &POLICY).is_some());
        assert_eq!(fits_deadline(&rate, 1_000_000, Duration::from_secs(1)), None);
        // Without a prefill measured, every prompt token is priced as a whole step.
        assert_eq!(rate.prompt_token_seconds(), Some(0.1));
        rate.record_warm_up(Duration::from_millis(100), None, 32, Duration::from_millis(64));
        assert_eq!(rate.prompt_token_seconds(), Some(0.002));
    }

    #[test]
    fn max_tokens_that_cannot_fit_even_when_idle_are_known() {
        let rate = measured(10, 1);
        assert_eq!(fits_deadline(&rate, 100, Duration::from_secs(1)), Some(true));
        assert_eq!(fits_deadline(&rate, 101, Duration::from_secs(1)), Some(false));
    }

    #[test]
    fn outstanding_work_follows_accepts_and_ends_and_learns_the_typical_prompt() {
        let mut load = Outstanding::default();
        load.accept(Work { prompt_tokens: 100.0, tokens: 10.0 });
        load.accept(Work { prompt_tokens: 200.0, tokens: 10.0 });
        // 100 + 0.2 x (200 - 100) = 120.
        assert!((load.typical_prompt_tokens - 120.0).abs() < 1e-9);
        assert_eq!((load.requests, load.work), (2, Work { prompt_tokens: 300.0, tokens: 20.0 }));
        // The first request's prefill done, then it ends with 4 tokens never generated.
        load.subtract(Work { prompt_tokens: 100.0, tokens: 6.0 });
        load.end(Work { prompt_tokens: 0.0, tokens: 4.0 });
        assert_eq!((load.requests, load.work), (1, Work { prompt_tokens: 200.0, tokens: 10.0 }));
        load.end(Work { prompt_tokens: 500.0, tokens: 500.0 });
        assert_eq!((load.requests, load.work), (0, Work::default()), "never below zero");
    }

    #[test]
    fn completion_share_scales_expected_work_with_a_floor() {
        let mut share = CompletionShare::default();
        assert_eq!(share.expected_tokens(100), 100.0);
        share.record(50, 100);
        // 1 + 0.2 x (0.5 - 1) = 0.9.
        assert!((share.expected_tokens(100) - 90.0).abs() < 1e-9);
        for _ in 0..100 {
            share.record(0, 100);
        }
        assert!((share.expected_tokens(100) - 10.0).abs() < 1e-9);
        share.record(5, 0);
        assert!((share.expected_tokens(100) - 10.0).abs() < 1e-9, "max_tokens 0 is ignored");
    }
}
