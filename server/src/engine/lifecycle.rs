//! The engine thread's outermost wrapper: however the engine loop ends (a panic anywhere, an
//! error, a requested shutdown), the end is loud. The state turns stopped at once (so `/ready`
//! and `/health` answer 503), the queue is closed (new requests get 503 at once) and every
//! request still waiting is answered. Running requests are answered by their senders being
//! dropped with the scheduler, which the HTTP side reads as "the engine stopped".

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use super::{EngineStatus, RequestQueue, STATE_FAILED, STATE_STOPPED};
use crate::error::RequestError;

/// Runs the engine `body` and, whatever way it ends, marks the engine stopped and answers
/// everything left in the queue.
pub(super) fn run_engine(status: &EngineStatus, queue: &RequestQueue, body: impl FnOnce()) {
    let outcome = catch_unwind(AssertUnwindSafe(body));
    let requested = status.shutdown.load(Ordering::Acquire);
    // A failed load keeps its own state (the server exits with the load error).
    let _ = status.state.compare_exchange(super::STATE_LOADING, STATE_FAILED, Ordering::AcqRel, Ordering::Acquire);
    if status.state.load(Ordering::Acquire) != STATE_FAILED {
        status.state.store(STATE_STOPPED, Ordering::Release);
    }
    let answered = queue.close(|| if requested { RequestError::Draining } else { RequestError::EngineStopped });
    match outcome {
        Ok(()) if requested => tracing::info!(queued_answered = answered, "engine stopped on shutdown"),
        Ok(()) => tracing::error!(queued_answered = answered, "engine loop ended (a failed step); serving 503"),
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(panic = %message, queued_answered = answered, "engine thread panicked; serving 503");
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::sync::mpsc;

    use super::super::shedding::Policy;
    use super::super::{Event, GenerationParams, GenerationRequest, SamplingParams, STATE_READY};
    use super::*;

    fn queued(queue: &RequestQueue) -> (super::super::queue::WorkTicket, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let params = GenerationParams {
            sampling: SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, seed: None },
            max_tokens: 4,
            stop: vec![],
            ignore_eos: false,
        };
        let request = GenerationRequest {
            prompt: vec![1],
            params,
            arrival: now,
            deadline: now + Duration::from_secs(30),
            events,
        };
        (queue.push(request).expect("queued"), rx)
    }

    #[test]
    fn a_panic_stops_the_engine_and_answers_the_queue() {
        let status = EngineStatus::default();
        status.state.store(STATE_READY, Ordering::Release);
        status.beat();
        let queue = RequestQueue::new(10, Policy { factor: 0.0, max_batch_size: 1 });
        let (_ticket, mut rx) = queued(&queue);
        assert!(status.is_ready() && status.is_alive());
        run_engine(&status, &queue, || panic!("injected"));
        assert!(!status.is_ready() && !status.is_alive() && status.is_stopped());
        assert!(matches!(rx.try_recv(), Ok(Event::Failed(RequestError::EngineStopped))));
        let (events, _rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let late = GenerationRequest {
            prompt: vec![1],
            params: GenerationParams {
                sampling: SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, seed: None },
                max_tokens: 1,
                stop: vec![],
                ignore_eos: false,
            },
            arrival: now,
            deadline: now + Duration::from_secs(1),
            events,
        };
        assert!(matches!(queue.push(late), Err(RequestError::EngineStopped)));
    }

    #[test]
    fn a_requested_shutdown_answers_the_queue_as_draining() {
        let status = EngineStatus::default();
        status.state.store(STATE_READY, Ordering::Release);
        status.shutdown.store(true, Ordering::Release);
        let queue = RequestQueue::new(10, Policy { factor: 0.0, max_batch_size: 1 });
        let (_ticket, mut rx) = queued(&queue);
        run_engine(&status, &queue, || {});
        assert!(status.is_stopped());
        assert!(matches!(rx.try_recv(), Ok(Event::Failed(RequestError::Draining))));
    }

    #[test]
    fn a_failed_load_stays_failed() {
        let status = EngineStatus::default();
        let queue = RequestQueue::new(10, Policy { factor: 0.0, max_batch_size: 1 });
        run_engine(&status, &queue, || panic!("while loading"));
        assert_eq!(status.state.load(Ordering::Acquire), STATE_FAILED);
        assert!(!status.is_alive());
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let literal = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(literal.as_ref()), "plain");
        let formatted = catch_unwind(|| panic!("step {}", 3)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "step 3");
    }
}
