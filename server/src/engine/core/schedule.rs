//! `schedule()`: expire, grow or preempt the running batch, then admit in FIFO order.

use std::time::Instant;

use super::sequence::CoreSequence;
use super::{PlannedItem, SchedulerCore, SeqId, StepPlan};

impl SchedulerCore {
    /// Decides the next step. The running sequences come first, oldest first: a decode each
    /// and prompt chunks within the prefill budget; then waiting sequences are admitted while
    /// the batch, the budget and the free blocks allow.
    pub fn schedule(&mut self, now: Instant) -> StepPlan {
        let mut plan = StepPlan::default();
        self.expire(now, &mut plan.timed_out);
        let mut budget = self.config.max_prefill_tokens;
        let mut index = 0;
        while index < self.running.len() {
            let seq = &self.running[index];
            let decoding = seq.is_decoding();
            let count = if decoding { 1 } else { seq.uncomputed().min(budget) };
            if count == 0 {
                index += 1;
                continue;
            }
            let tokens_after = seq.computed + count;
            if !self.make_room(index, tokens_after, &mut plan.preempted) {
                // It was the youngest and preempted itself: nothing after it is left.
                break;
            }
            if !decoding {
                budget -= count;
            }
            plan.items.push(planned(&self.running[index], count));
            index += 1;
        }
        if plan.preempted.is_empty() {
            self.admit(&mut budget, &mut plan);
        }
        plan
    }

    /// Grows the holding of `running[index]` to `tokens`, preempting the youngest running
    /// sequences until it fits. False when the youngest was `running[index]` itself.
    fn make_room(&mut self, index: usize, tokens: usize, preempted: &mut Vec<SeqId>) -> bool {
        loop {
            if self.ledger.cover(self.running[index].id, tokens) {
                return true;
            }
            let youngest = self.running.len() - 1;
            self.preempt(youngest, preempted);
            if youngest == index {
                return false;
            }
        }
    }

    /// Frees a running sequence's blocks and puts it at the front of the waiting queue; its
    /// KV is rebuilt from its tokens when it is admitted again.
    fn preempt(&mut self, index: usize, preempted: &mut Vec<SeqId>) {
        let mut seq = self.running.remove(index);
        self.ledger.release(seq.id);
        seq.computed = 0;
        preempted.push(seq.id);
        // Victims leave youngest first, so pushing each to the front keeps the queue oldest first.
        self.waiting.push_front(seq);
    }

    fn admit(&mut self, budget: &mut usize, plan: &mut StepPlan) {
        while self.running.len() < self.config.max_batch_size && *budget > 0 {
            let Some(head) = self.waiting.front() else { break };
            // FIFO: when the oldest does not fit, everyone behind it waits too.
            if !self.ledger.cover(head.id, head.tokens.len()) {
                break;
            }
            let Some(mut seq) = self.waiting.pop_front() else { break };
            let count = seq.uncomputed().min(*budget);
            *budget -= count;
            if !seq.admitted_once {
                seq.admitted_once = true;
                plan.admitted.push(seq.id);
            }
            plan.items.push(planned(&seq, count));
            let at = self.running.partition_point(|s| s.id < seq.id);
            self.running.insert(at, seq);
        }
    }

    /// Removes every sequence whose deadline has passed, waiting or running.
    fn expire(&mut self, now: Instant, timed_out: &mut Vec<SeqId>) {
        let expired: Vec<SeqId> =
            self.running.iter().chain(self.waiting.iter()).filter(|s| s.deadline <= now).map(|s| s.id).collect();
        for id in expired {
            self.remove(id);
            timed_out.push(id);
        }
    }
}

/// The next `count` tokens of `seq` after what its KV holds.
fn planned(seq: &CoreSequence, count: usize) -> PlannedItem {
    let start = seq.computed;
    let end = start + count;
    PlannedItem {
        id: seq.id,
        start,
        tokens: seq.tokens[start..end].to_vec(),
        sample: end == seq.tokens.len(),
        prompt_tokens: end.min(seq.prompt_len).saturating_sub(start),
    }
}
