//! The core driven by a fake model: plain token ids in, a token that is a fixed function of
//! the whole KV contents out. The harness keeps its own KV per sequence and checks every plan
//! against it, so a wrong start, a lost chunk or a bad recompute changes the tokens.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::engine::FinishReason;

const BLOCK: usize = 16;

fn config(total_blocks: usize) -> CoreConfig {
    CoreConfig {
        max_batch_size: 8,
        max_prefill_tokens: 64,
        context_length: 4096,
        block_tokens: BLOCK,
        total_blocks,
        stop_token_ids: vec![],
    }
}

/// The fake model: the next token depends on every token in the cache, in order.
fn fake_next(cache: &[u32]) -> u32 {
    let hash = cache.iter().fold(17u64, |h, &t| h.wrapping_mul(1_000_003).wrapping_add(u64::from(t) + 1));
    100 + (hash % 50) as u32
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i * 7 + seed) % 90).collect()
}

struct Harness {
    core: SchedulerCore,
    now: Instant,
    deadline: Instant,
    kv: HashMap<SeqId, Vec<u32>>,
    out: HashMap<SeqId, Vec<u32>>,
    finished: HashMap<SeqId, FinishReason>,
    timed_out: Vec<SeqId>,
    preempted: Vec<SeqId>,
    admitted: Vec<SeqId>,
    plans: Vec<StepPlan>,
}

impl Harness {
    fn new(config: CoreConfig) -> Self {
        let now = Instant::now();
        Self {
            core: SchedulerCore::new(config),
            now,
            deadline: now + Duration::from_secs(3600),
            kv: HashMap::new(),
            out: HashMap::new(),
            finished: HashMap::new(),
            timed_out: Vec::new(),
            preempted: Vec::new(),
            admitted: Vec::new(),
            plans: Vec::new(),
        }
    }

    fn add(&mut self, prompt: Vec<u32>, max_tokens: usize) -> SeqId {
        let request = NewSequence { prompt, max_tokens, ignore_eos: false, deadline: self.deadline };
        self.core.add(request).unwrap()
    }

    /// One step: plan, run the fake model over the plan, fold the tokens back.
    fn step(&mut self) -> StepPlan {
        let plan = self.core.schedule(self.now);
        for id in plan.preempted.iter().chain(plan.timed_out.iter()) {
            self.kv.remove(id);
        }
        self.timed_out.extend(&plan.timed_out);
        self.preempted.extend(&plan.preempted);
        self.admitted.extend(&plan.admitted);
        let mut sampled = Vec::new();
        for item in &plan.items {
            if item.start == 0 {
                self.kv.insert(item.id, Vec::new());
            }
            let cache = self.kv.get_mut(&item.id).expect("a planned sequence has a cache");
            assert_eq!(cache.len(), item.start, "plan starts where the cache ends: {item:?}");
            cache.extend_from_slice(&item.tokens);
            if item.sample {
                sampled.push(SampledToken { id: item.id, token: fake_next(cache) });
            }
        }
        for update in self.core.update_from_output(&plan, &sampled) {
            self.out.entry(update.id).or_default().push(update.token);
            if let Some(reason) = update.finished {
                self.finished.insert(update.id, reason);
                self.kv.remove(&update.id);
            }
        }
        self.check_ledger();
        self.plans.push(plan.clone());
        plan
    }

    /// Holdings are exactly ceil(tokens / block) per running sequence and within the total.
    fn check_ledger(&self) {
        let held: usize = self.core.running.iter().map(|s| self.core.ledger.held(s.id)).sum();
        assert_eq!(held, self.core.blocks_used(), "every used block belongs to a running sequence");
        assert!(self.core.blocks_used() <= self.core.blocks_total());
        for seq in self.core.waiting.iter() {
            assert_eq!(self.core.ledger.held(seq.id), 0, "a waiting sequence holds nothing");
        }
    }

    fn run(&mut self, max_steps: usize) {
        for _ in 0..max_steps {
            if self.core.is_idle() {
                return;
            }
            self.step();
        }
        panic!("not idle after {max_steps} steps");
    }
}

/// What one sequence generates alone with a cache that never runs out.
fn reference(prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut h = Harness::new(config(10_000));
    let id = h.add(prompt.to_vec(), max_tokens);
    h.run(10_000);
    h.out.remove(&id).unwrap_or_default()
}

#[test]
fn a_request_prefills_then_decodes_to_max_tokens() {
    let mut h = Harness::new(config(100));
    let p = prompt(10, 1);
    let id = h.add(p.clone(), 5);
    h.run(100);
    assert_eq!(h.finished[&id], FinishReason::Length);
    assert_eq!(h.out[&id].len(), 5);
    assert_eq!(h.plans[0].items[0].tokens, p, "a short prompt is one chunk");
    assert_eq!(h.core.blocks_used(), 0, "all blocks freed at the finish");
}

#[test]
fn a_long_prompt_is_chunked_within_the_prefill_budget() {
    let mut h = Harness::new(CoreConfig { max_prefill_tokens: 16, ..config(100) });
    let id = h.add(prompt(40, 2), 2);
    let chunks: Vec<(usize, usize, bool)> = (0..3)
        .map(|_| {
            let plan = h.step();
            (plan.items[0].start, plan.items[0].tokens.len(), plan.items[0].sample)
        })
        .collect();
    assert_eq!(chunks, vec![(0, 16, false), (16, 16, false), (32, 8, true)]);
    assert_eq!(h.out[&id].len(), 1, "the last chunk samples the first token");
    h.run(10);
    assert_eq!(h.out[&id], reference(&prompt(40, 2), 2), "chunking does not change the tokens");
}

#[test]
fn the_prefill_budget_is_shared_by_all_sequences_of_a_step() {
    let mut h = Harness::new(CoreConfig { max_prefill_tokens: 16, ..config(100) });
    let a = h.add(prompt(20, 1), 3);
    let b = h.add(prompt(20, 2), 3);
    let first = h.step();
    assert_eq!(first.items.iter().map(|i| (i.id, i.tokens.len())).collect::<Vec<_>>(), vec![(a, 16)]);
    let second = h.step();
    assert_eq!(second.items.iter().map(|i| (i.id, i.tokens.len())).collect::<Vec<_>>(), vec![(a, 4), (b, 12)]);
    for plan in &h.plans {
        let prefill: usize = plan.items.iter().filter(|i| i.tokens.len() > 1).map(|i| i.tokens.len()).sum();
        assert!(prefill <= 16, "{plan:?}");
    }
}

#[test]
fn decodes_do_not_use_the_prefill_budget() {
    let mut h = Harness::new(CoreConfig { max_prefill_tokens: 16, ..config(100) });
    let a = h.add(prompt(4, 1), 10);
    h.step();
    let b = h.add(prompt(16, 2), 10);
    let plan = h.step();
    let shares: Vec<(SeqId, usize)> = plan.items.iter().map(|i| (i.id, i.tokens.len())).collect();
    assert_eq!(shares, vec![(a, 1), (b, 16)], "a's decode plus b's whole prompt");
}

#[test]
fn max_batch_size_bounds_the_running_batch() {
    let mut h = Harness::new(CoreConfig { max_batch_size: 3, ..config(1000) });
    let ids: Vec<SeqId> = (0..7).map(|i| h.add(prompt(5, i), 4)).collect();
    for _ in 0..200 {
        if h.core.is_idle() {
            break;
        }
        let plan = h.step();
        assert!(plan.items.len() <= 3 && h.core.num_running() <= 3, "{plan:?}");
    }
    assert!(ids.iter().all(|id| h.finished.contains_key(id)));
}

#[test]
fn admission_is_first_in_first_out() {
    let mut h = Harness::new(CoreConfig { max_batch_size: 2, ..config(1000) });
    let ids: Vec<SeqId> = (0..6).map(|i| h.add(prompt(3 + i as usize, i), 2 + i as usize)).collect();
    h.run(500);
    assert_eq!(h.admitted, ids, "admitted in arrival order");
}

#[test]
fn head_of_line_blocking_a_younger_small_request_does_not_pass_the_oldest() {
    // 10 blocks: a holds 5, the big head needs 6, the small one behind it needs 1.
    let mut h = Harness::new(config(10));
    let a = h.add(prompt(80, 1), 40);
    h.step();
    let big = h.add(prompt(96, 2), 2);
    let small = h.add(prompt(4, 3), 2);
    let plan = h.step();
    assert!(plan.admitted.is_empty(), "neither passes: {plan:?}");
    assert_eq!(h.core.num_waiting(), 2);
    h.run(500);
    let order: Vec<SeqId> = h.admitted.clone();
    assert_eq!(order, vec![a, big, small]);
}

#[test]
fn kv_exhaustion_queues_requests_and_every_one_completes_with_its_own_tokens() {
    // 8 blocks = 128 tokens; each request reaches 64 tokens, so only two fit at once.
    let mut h = Harness::new(config(8));
    let prompts: Vec<Vec<u32>> = (0..6).map(|i| prompt(40, i)).collect();
    let ids: Vec<SeqId> = prompts.iter().map(|p| h.add(p.clone(), 24)).collect();
    let plan = h.step();
    assert!(plan.admitted.len() < ids.len(), "not everyone is admitted at once: {plan:?}");
    h.run(2000);
    for (id, p) in ids.iter().zip(&prompts) {
        assert_eq!(h.finished[id], FinishReason::Length);
        assert_eq!(h.out[id], reference(p, 24), "sequence {id}");
    }
    assert_eq!(h.core.blocks_used(), 0);
}

#[test]
fn a_sequence_grows_by_one_block_when_it_crosses_a_boundary() {
    let mut h = Harness::new(config(100));
    let id = h.add(prompt(15, 1), 40);
    let mut seen = Vec::new();
    for _ in 0..20 {
        h.step();
        let seq = h.core.running.iter().find(|s| s.id == id).unwrap();
        seen.push((seq.computed, h.core.ledger.held(id)));
    }
    for (computed, held) in &seen {
        assert_eq!(*held, computed.div_ceil(BLOCK).max(1), "{seen:?}");
    }
    assert!(seen.contains(&(16, 1)) && seen.contains(&(17, 2)), "{seen:?}");
}

#[test]
fn freed_blocks_are_reused_after_a_finish() {
    let mut h = Harness::new(config(4));
    let a = h.add(prompt(40, 1), 8); // up to 48 tokens: 3 blocks
    let b = h.add(prompt(40, 2), 8);
    let first = h.step();
    assert_eq!(first.admitted, vec![a], "b needs 3 blocks, 1 is free");
    h.run(200);
    assert!(h.finished.contains_key(&a) && h.finished.contains_key(&b));
    assert!(h.preempted.is_empty(), "b waited instead: {:?}", h.preempted);
    assert_eq!(h.out[&b], reference(&prompt(40, 2), 8));
}

#[test]
fn the_youngest_running_sequence_is_preempted_and_waits_at_the_front() {
    // 6 blocks: a and b admitted with 2 blocks each, both grow past 48 tokens.
    let mut h = Harness::new(config(6));
    let a = h.add(prompt(32, 1), 40);
    let b = h.add(prompt(32, 2), 40);
    h.step();
    let c = h.add(prompt(4, 3), 2);
    let mut first_preemption = None;
    for _ in 0..100 {
        let plan = h.step();
        if !plan.preempted.is_empty() {
            first_preemption = Some(plan);
            break;
        }
    }
    let plan = first_preemption.expect("someone is preempted");
    assert!(!plan.preempted.contains(&a), "the oldest keeps running: {plan:?}");
    let front = h.core.waiting.front().map(|s| s.id);
    assert_eq!(front, plan.preempted.last().copied(), "the victim waits first in line");
    assert!(plan.admitted.is_empty(), "a step that preempts admits nobody");
    h.run(1000);
    for (id, p, n) in [(a, prompt(32, 1), 40), (b, prompt(32, 2), 40), (c, prompt(4, 3), 2)] {
        assert_eq!(h.out[&id], reference(&p, n), "sequence {id}");
    }
}

#[test]
fn preemption_and_recompute_give_the_same_tokens() {
    let mut h = Harness::new(CoreConfig { max_prefill_tokens: 32, ..config(7) });
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| prompt(20 + 5 * i as usize, i)).collect();
    let ids: Vec<SeqId> = prompts.iter().map(|p| h.add(p.clone(), 60)).collect();
    h.run(5000);
    assert!(!h.preempted.is_empty(), "the workload preempts");
    let recomputed =
        h.plans.iter().flat_map(|p| &p.items).any(|i| i.tokens.len() > 1 && i.tokens.len() > i.prompt_tokens);
    assert!(recomputed, "a preempted sequence rebuilds prompt and generated tokens");
    for (id, p) in ids.iter().zip(&prompts) {
        assert_eq!(h.out[id], reference(p, 60), "sequence {id}");
    }
}

#[test]
fn the_oldest_running_sequence_is_never_preempted() {
    let mut h = Harness::new(CoreConfig { max_prefill_tokens: 32, ..config(6) });
    for i in 0..6 {
        h.add(prompt(10 + 3 * i as usize, i), 50);
    }
    for _ in 0..5000 {
        if h.core.is_idle() {
            break;
        }
        let oldest = h.core.running.first().map(|s| s.id);
        let plan = h.step();
        if let Some(oldest) = oldest {
            assert!(!plan.preempted.contains(&oldest), "{plan:?}");
        }
    }
    assert!(h.core.is_idle() && h.finished.len() == 6);
}

#[test]
fn a_prompt_that_can_never_fit_the_cache_is_rejected() {
    let mut core = SchedulerCore::new(config(4));
    let deadline = Instant::now() + Duration::from_secs(10);
    let request = |len| NewSequence { prompt: prompt(len, 0), max_tokens: 1, ignore_eos: false, deadline };
    let err = core.add(request(64)).unwrap_err();
    assert_eq!(
        err,
        Rejection::ExceedsKvCache { prompt_tokens: 64, blocks_needed: 5, block_tokens: 16, blocks_total: 4 }
    );
    assert!(err.to_string().contains("KV cache"), "{err}");
    assert!(core.add(request(63)).is_ok(), "63 tokens plus one fit 4 blocks");
    assert_eq!(core.num_waiting(), 1, "the rejected one was never queued");
}

#[test]
fn a_prompt_that_fills_the_context_or_is_empty_is_rejected() {
    let mut core = SchedulerCore::new(CoreConfig { context_length: 32, ..config(100) });
    let deadline = Instant::now() + Duration::from_secs(10);
    let request = |len| NewSequence { prompt: prompt(len, 0), max_tokens: 1, ignore_eos: false, deadline };
    assert_eq!(core.add(request(32)), Err(Rejection::ExceedsContext { prompt_tokens: 32, context: 32 }));
    assert_eq!(core.add(request(0)), Err(Rejection::EmptyPrompt));
    assert!(core.add(request(31)).is_ok());
}

#[test]
fn cancellation_mid_prefill_frees_the_blocks_at_once() {
    let mut h = Harness::new(CoreConfig { max_prefill_tokens: 16, ..config(10) });
    let a = h.add(prompt(100, 1), 4);
    let plan = h.step();
    assert!(!plan.items[0].sample, "a is mid-prefill");
    assert_eq!(h.core.blocks_used(), 7, "a holds its whole prompt");
    assert!(h.core.remove(a));
    assert_eq!(h.core.blocks_used(), 0);
    assert!(!h.core.remove(a), "removing twice is a no-op");
    let b = h.add(prompt(140, 2), 4);
    h.run(100);
    assert_eq!(h.finished.get(&a), None);
    assert_eq!(h.out[&b], reference(&prompt(140, 2), 4), "b reuses the freed blocks");
}

#[test]
fn a_cancelled_waiting_request_is_never_admitted() {
    let mut h = Harness::new(CoreConfig { max_batch_size: 1, ..config(100) });
    let a = h.add(prompt(4, 1), 3);
    let b = h.add(prompt(4, 2), 3);
    let c = h.add(prompt(4, 3), 3);
    h.step();
    assert!(h.core.remove(b));
    h.run(100);
    assert_eq!(h.admitted, vec![a, c]);
}

#[test]
fn a_request_times_out_in_the_queue() {
    let mut h = Harness::new(CoreConfig { max_batch_size: 1, ..config(100) });
    let a = h.add(prompt(4, 1), 50);
    let short = NewSequence { prompt: prompt(4, 2), max_tokens: 5, ignore_eos: false, deadline: h.now };
    let b = h.core.add(short).unwrap();
    h.now += Duration::from_millis(1);
    let plan = h.step();
    assert_eq!(plan.timed_out, vec![b]);
    assert_eq!(plan.admitted, vec![a]);
    assert_eq!(h.core.num_waiting(), 0);
}

#[test]
fn a_running_request_times_out_and_frees_its_blocks() {
    let mut h = Harness::new(config(100));
    let a = h.add(prompt(20, 1), 500);
    h.step();
    assert_eq!(h.core.blocks_used(), 2);
    h.now = h.deadline;
    let plan = h.step();
    assert_eq!(plan.timed_out, vec![a]);
    assert!(plan.items.is_empty() && h.core.is_idle());
    assert_eq!(h.core.blocks_used(), 0);
}

#[test]
fn a_stop_token_ends_with_stop_unless_eos_is_ignored() {
    let p = prompt(6, 4);
    let tokens = reference(&p, 10);
    let stop = tokens[3];
    let mut h = Harness::new(CoreConfig { stop_token_ids: vec![stop], ..config(100) });
    let a = h.add(p.clone(), 10);
    let ignoring = NewSequence { prompt: p.clone(), max_tokens: 10, ignore_eos: true, deadline: h.deadline };
    let b = h.core.add(ignoring).unwrap();
    h.run(100);
    assert_eq!(h.finished[&a], FinishReason::Stop);
    let first_stop = tokens.iter().position(|t| *t == stop).unwrap();
    assert_eq!(h.out[&a], tokens[..=first_stop].to_vec());
    assert_eq!((h.finished[&b], h.out[&b].len()), (FinishReason::Length, 10));
}

#[test]
fn a_sequence_that_fills_the_whole_cache_ends_with_length() {
    // 3 blocks = 48 tokens, less than the context.
    let mut h = Harness::new(config(3));
    let a = h.add(prompt(40, 1), 1000);
    h.run(100);
    assert_eq!(h.finished[&a], FinishReason::Length);
    assert_eq!(40 + h.out[&a].len(), 48);
    assert!(h.preempted.is_empty());
}

#[test]
fn a_sequence_that_reaches_the_context_ends_with_length() {
    let mut h = Harness::new(CoreConfig { context_length: 24, ..config(100) });
    let a = h.add(prompt(20, 1), 1000);
    h.run(100);
    assert_eq!((h.finished[&a], h.out[&a].len()), (FinishReason::Length, 4));
}

#[test]
fn the_core_asks_for_at_most_a_batch_of_requests() {
    let mut core = SchedulerCore::new(CoreConfig { max_batch_size: 2, ..config(100) });
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(core.wants_more());
    core.add(NewSequence { prompt: vec![1], max_tokens: 1, ignore_eos: false, deadline }).unwrap();
    assert!(core.wants_more());
    core.add(NewSequence { prompt: vec![2], max_tokens: 1, ignore_eos: false, deadline }).unwrap();
    assert!(!core.wants_more(), "the rest stays in the bounded request queue");
}

#[test]
fn mixed_workloads_under_a_small_cache_all_complete_with_their_own_tokens() {
    // A fixed pseudo-random mix of arrivals, prompt lengths and budgets over a cache that
    // forces queueing and preemption; every request ends with the tokens it gets alone.
    let mut state = 12345u64;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let mut h = Harness::new(CoreConfig { max_batch_size: 5, max_prefill_tokens: 48, ..config(12) });
    let mut expected = HashMap::new();
    for step in 0..4000 {
        if step < 300 && next(4) == 0 {
            let p = prompt(1 + next(120) as usize, next(90) as u32);
            let max_tokens = 1 + next(60) as usize;
            let id = h.add(p.clone(), max_tokens);
            expected.insert(id, (p, max_tokens));
        }
        if step >= 300 && h.core.is_idle() {
            break;
        }
        h.step();
    }
    assert!(h.core.is_idle(), "the mix drains");
    assert!(!h.preempted.is_empty(), "the mix preempts");
    for (id, (p, max_tokens)) in &expected {
        let mut want = reference(p, *max_tokens);
        // The whole cache (192 tokens) bounds a sequence as the context does.
        want.truncate(192 - p.len());
        assert_eq!(h.out[id], want, "sequence {id}");
    }
}
