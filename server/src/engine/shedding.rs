//! Deadline-aware admission: from the measured service rate and the work already accepted,
//! estimate when a new request would finish and refuse it at once (429 + Retry-After) when that
//! is past its deadline, instead of accepting it and timing it out later.
//!
//! The model is a fluid one, in generated tokens:
//! - every engine step reports how many tokens it produced and how long it took; two EWMAs
//!   follow the step time (one token per running sequence per step) and the throughput
//!   (tokens per busy second, which folds the cost of prefill chunks into the rate);
//! - every accepted request adds its expected tokens (`max_tokens` x the observed share of
//!   `max_tokens` that requests really generate) to the outstanding work until it ends;
//! - a request finishes no earlier than `tokens x step time` (one token per step) and no earlier
//!   than the accepted work, its own included, drains at the measured throughput:
//!   `estimate = max(tokens x step, (outstanding + tokens) / throughput)`.
//!
//! The throughput is the one measured at the batch sizes actually run, so a larger batch (often
//! faster per token) counts only once it has been seen: the estimate errs towards refusing, and
//! as admitted work grows the batch the measured rate follows. Before the first step is
//! measured nothing is known, so one request at a time is admitted; the engine's warm-up forward
//! gives the first rate (one sequence, lazy start-up included, so on the slow side). An idle
//! engine (nothing accepted) admits any request: there is no work to shed in its favour.
//!
//! The knob is `--shed-factor` (SHED_FACTOR, default 1): a request is refused when
//! `factor x estimate` exceeds the time left to its deadline; above 1 sheds earlier (margin for a
//! noisy machine), 0 turns shedding off.

use std::time::Duration;

/// Weight of the newest step in the moving averages.
const EWMA_WEIGHT: f64 = 0.2;

/// The engine's measured speed, updated after every step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceRate {
    /// Seconds per engine step (each running sequence gets one token per step).
    step_seconds: Option<f64>,
    /// The fastest step seen: the best case any request can count on.
    fastest_step_seconds: Option<f64>,
    /// Generated tokens per busy second.
    tokens_per_second: Option<f64>,
}

impl ServiceRate {
    /// Records one step that generated `tokens` tokens in `took`.
    pub fn record_step(&mut self, tokens: usize, took: Duration) {
        let seconds = took.as_secs_f64().max(1e-6);
        if tokens == 0 {
            // A step of prefill chunks only: it delays the decoders without producing tokens,
            // so it lowers the throughput but says nothing about one token's step time.
            self.tokens_per_second = Some(ewma(self.tokens_per_second, 0.0));
            return;
        }
        self.step_seconds = Some(ewma(self.step_seconds, seconds));
        self.fastest_step_seconds = Some(self.fastest_step_seconds.map_or(seconds, |f| f.min(seconds)));
        self.tokens_per_second = Some(ewma(self.tokens_per_second, tokens as f64 / seconds));
    }

    /// Records the warm-up forward: a first (slow: lazy start-up) rate, but not a best case,
    /// so it never refuses a `max_tokens` on its own.
    pub fn record_warm_up(&mut self, took: Duration) {
        let fastest = self.fastest_step_seconds;
        self.record_step(1, took);
        self.fastest_step_seconds = fastest;
    }

    pub fn step_seconds(&self) -> Option<f64> {
        self.step_seconds
    }

    pub fn fastest_step_seconds(&self) -> Option<f64> {
        self.fastest_step_seconds
    }

    pub fn tokens_per_second(&self) -> Option<f64> {
        self.tokens_per_second.filter(|t| *t > 0.0)
    }
}

fn ewma(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(old) => old + EWMA_WEIGHT * (new - old),
        None => new,
    }
}

/// The work already accepted (queued and running).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outstanding {
    pub requests: usize,
    /// Expected tokens still to generate, over every accepted request.
    pub tokens: f64,
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
}

/// Seconds until a request expecting `tokens` tokens would finish, or None while the rate is
/// unknown.
pub fn estimate_finish(rate: &ServiceRate, load: &Outstanding, tokens: f64) -> Option<Duration> {
    let step = rate.step_seconds()?;
    // Only prefill steps so far: one sequence's rate.
    let throughput = rate.tokens_per_second().unwrap_or(1.0 / step);
    let seconds = (tokens * step).max((load.tokens + tokens) / throughput);
    Some(Duration::from_secs_f64(seconds.max(0.0)))
}

/// Admit or refuse a request expecting `tokens` tokens with `budget` left before its deadline.
pub fn judge(rate: &ServiceRate, load: &Outstanding, tokens: f64, budget: Duration, policy: &Policy) -> Verdict {
    if policy.factor <= 0.0 {
        return Verdict::Admit;
    }
    if load.requests == 0 {
        // Nothing ahead to wait for: an idle engine always tries (a `max_tokens` that cannot
        // fit even at the fastest step is refused by `fits_deadline`), and this is also how
        // the first request is served before anything is measured.
        return Verdict::Admit;
    }
    let Some(estimate) = estimate_finish(rate, load, tokens) else {
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

    const POLICY: Policy = Policy { factor: 1.0 };

    fn measured(step_ms: u64, tokens_per_step: usize) -> ServiceRate {
        let mut rate = ServiceRate::default();
        rate.record_step(tokens_per_step, Duration::from_millis(step_ms));
        rate
    }

    #[test]
    fn an_idle_engine_needs_only_the_requests_own_tokens() {
        // 10 ms steps, 4 tokens each: 400 tokens/s; 100 tokens take 1 s at one per step.
        let rate = measured(10, 4);
        let idle = Outstanding::default();
        assert_eq!(estimate_finish(&rate, &idle, 100.0), Some(Duration::from_secs(1)));
        assert_eq!(judge(&rate, &idle, 100.0, Duration::from_secs(2), &POLICY), Verdict::Admit);
        // Idle, it is tried even when the estimate says it is late; behind one other, refused.
        assert_eq!(judge(&rate, &idle, 100.0, Duration::from_millis(900), &POLICY), Verdict::Admit);
        let one = Outstanding { requests: 1, tokens: 0.0 };
        assert!(matches!(judge(&rate, &one, 100.0, Duration::from_millis(900), &POLICY), Verdict::Refuse { .. }));
    }

    #[test]
    fn accepted_work_must_drain_first_at_the_measured_throughput() {
        let rate = measured(10, 4);
        let load = Outstanding { requests: 40, tokens: 3_900.0 };
        // (3900 + 100) / 400 = 10 s.
        assert_eq!(estimate_finish(&rate, &load, 100.0), Some(Duration::from_secs(10)));
        assert_eq!(judge(&rate, &load, 100.0, Duration::from_secs(30), &POLICY), Verdict::Admit);
        let refused = judge(&rate, &load, 100.0, Duration::from_secs(4), &POLICY);
        assert_eq!(refused, Verdict::Refuse { estimate: Duration::from_secs(10), retry_after: Duration::from_secs(6) });
    }

    #[test]
    fn the_factor_sheds_earlier_and_zero_turns_shedding_off() {
        let rate = measured(10, 4);
        let load = Outstanding { requests: 40, tokens: 3_900.0 };
        let strict = Policy { factor: 2.0 };
        assert!(matches!(judge(&rate, &load, 100.0, Duration::from_secs(15), &strict), Verdict::Refuse { .. }));
        let off = Policy { factor: 0.0 };
        assert_eq!(judge(&rate, &load, 1e9, Duration::from_millis(1), &off), Verdict::Admit);
    }

    #[test]
    fn retry_after_is_at_least_a_second() {
        let rate = measured(10, 4);
        let load = Outstanding { requests: 1, tokens: 0.0 };
        // 1.01 s against a 1 s budget.
        let verdict = judge(&rate, &load, 101.0, Duration::from_secs(1), &POLICY);
        assert!(matches!(verdict, Verdict::Refuse { retry_after, .. } if retry_after == Duration::from_secs(1)));
    }

    #[test]
    fn unmeasured_admits_one_request_at_a_time() {
        let rate = ServiceRate::default();
        let idle = Outstanding::default();
        assert_eq!(judge(&rate, &idle, 1e6, Duration::from_secs(1), &POLICY), Verdict::Admit);
        let busy = Outstanding { requests: 1, tokens: 1.0 };
        assert!(matches!(judge(&rate, &busy, 1.0, Duration::from_secs(30), &POLICY), Verdict::Refuse { .. }));
        assert_eq!(fits_deadline(&rate, 10, Duration::from_secs(1)), None);
    }

    #[test]
    fn only_prefill_measured_counts_one_sequence_rate() {
        let mut rate = ServiceRate::default();
        rate.record_step(0, Duration::from_millis(50));
        assert_eq!(estimate_finish(&rate, &Outstanding::default(), 1.0), None, "no token step yet");
        rate.record_step(1, Duration::from_millis(10));
        // The prefill-only step pulled the throughput below one sequence's 100 tokens/s.
        let estimate = estimate_finish(&rate, &Outstanding { requests: 1, tokens: 100.0 }, 100.0).unwrap();
        assert!(estimate > Duration::from_secs(2), "{estimate:?}");
    }

    #[test]
    fn averages_follow_recent_steps_and_prefill_only_steps_lower_throughput() {
        let mut rate = measured(10, 4);
        rate.record_step(4, Duration::from_millis(20));
        // 10 + 0.2 x (20 - 10) = 12 ms.
        assert!((rate.step_seconds().unwrap() - 0.012).abs() < 1e-9);
        assert!((rate.fastest_step_seconds().unwrap() - 0.010).abs() < 1e-9);
        let before = rate.tokens_per_second().unwrap();
        rate.record_step(0, Duration::from_millis(50));
        assert!(rate.tokens_per_second().unwrap() < before);
        assert!((rate.step_seconds().unwrap() - 0.012).abs() < 1e-9, "prefill-only steps keep the step time");
    }

    #[test]
    fn the_warm_up_gives_a_rate_but_no_best_case() {
        let mut rate = ServiceRate::default();
        rate.record_warm_up(Duration::from_millis(100));
        assert!(estimate_finish(&rate, &Outstanding::default(), 10.0).is_some());
        assert_eq!(fits_deadline(&rate, 1_000_000, Duration::from_secs(1)), None);
    }

    #[test]
    fn max_tokens_that_cannot_fit_even_when_idle_are_known() {
        let rate = measured(10, 1);
        assert_eq!(fits_deadline(&rate, 100, Duration::from_secs(1)), Some(true));
        assert_eq!(fits_deadline(&rate, 101, Duration::from_secs(1)), Some(false));
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
