//! Forgetting deleted resources without a finalizer.
//!
//! Deletion must never wait for the operator (it may be uninstalled), so there is no finalizer:
//! children go through their owner references, and what lives in the operator's memory (the
//! gate job, the resource's gauges) is dropped once the resource is missing from the
//! controller's store. The reconciler tracks every resource it worked on; a periodic sweep
//! (run.rs) compares that with the store.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

/// The resources (`namespace/name`) the reconciler has gate jobs or gauges for.
#[derive(Default)]
pub struct Tracked {
    keys: Mutex<BTreeSet<String>>,
}

impl Tracked {
    pub fn insert(&self, key: &str) {
        self.lock().insert(key.to_string());
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Removes and returns the tracked keys that are not `present`.
    pub fn take_gone(&self, present: &BTreeSet<String>) -> Vec<String> {
        let mut keys = self.lock();
        let gone: Vec<String> = keys.difference(present).cloned().collect();
        for key in &gone {
            keys.remove(key);
        }
        gone
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A panic while holding the set leaves it consistent (inserts and removes are atomic).
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `namespace/name` split back into its parts.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_missing_from_the_store_are_taken_and_only_once() {
        let tracked = Tracked::default();
        for key in ["ml/chat", "ml/embed", "other/chat"] {
            tracked.insert(key);
        }
        let present = BTreeSet::from(["ml/chat".to_string()]);
        assert_eq!(tracked.take_gone(&present), ["ml/embed", "other/chat"]);
        assert!(tracked.take_gone(&present).is_empty(), "a swept key is forgotten");
        tracked.remove("ml/chat");
        assert!(tracked.take_gone(&BTreeSet::new()).is_empty());
        assert_eq!(split_key("ml/chat"), Some(("ml", "chat")));
    }
}
