//! `update_from_output()`: what a step computed and sampled, folded back into the sequences.

use super::{SampledToken, SchedulerCore, StepPlan, TokenUpdate};
use crate::engine::FinishReason;

impl SchedulerCore {
    /// Marks the plan's tokens as cached and appends each sampled token; a sequence that ends
    /// (stop token, max_tokens, context or whole cache reached) is removed and freed. The driver
    /// samples every item with `sample`; one without a token waits for its deadline.
    pub fn update_from_output(&mut self, plan: &StepPlan, sampled: &[SampledToken]) -> Vec<TokenUpdate> {
        let limit = self.max_sequence_tokens();
        let mut updates = Vec::with_capacity(sampled.len());
        for item in &plan.items {
            // Gone since the plan (removed by the driver): nothing to update.
            let Some(index) = self.running.iter().position(|s| s.id == item.id) else { continue };
            let seq = &mut self.running[index];
            seq.computed = item.start + item.tokens.len();
            if !item.sample {
                continue;
            }
            let Some(token) = sampled.iter().find(|s| s.id == item.id).map(|s| s.token) else { continue };
            seq.tokens.push(token);
            let is_stop_token = !seq.ignore_eos && self.config.stop_token_ids.contains(&token);
            let finished = if is_stop_token {
                Some(FinishReason::Stop)
            } else if seq.generated() >= seq.max_tokens || seq.tokens.len() >= limit {
                Some(FinishReason::Length)
            } else {
                None
            };
            if finished.is_some() {
                let id = seq.id;
                self.remove(id);
            }
            updates.push(TokenUpdate { id: item.id, token, finished, is_stop_token });
        }
        updates
    }
}
