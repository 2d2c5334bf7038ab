//! Back-off after failed reconciles, shared by both controllers' `error_policy`: `base * 2^(n-1)` for the n-th
//! consecutive failure of one object, capped, forgotten when a reconcile of that object succeeds.
//!
//! This is for errors of the controller's own calls (AWS throttling, an API server hiccup). Failures users must
//! see (failed builds, failed rollouts) are recorded in the object's status, not here, so they survive a restart.

use std::{collections::HashMap, sync::Mutex, time::Duration};

/// The delay before retry number `failures` (1 for the first failure): `base * 2^(failures-1)`, at most `cap`.
pub fn backoff_delay(base: Duration, failures: u32, cap: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << exponent).min(cap)
}

/// Consecutive failures per object (namespace, name).
#[derive(Debug)]
pub struct ErrorBackoff {
    base: Duration,
    cap: Duration,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl ErrorBackoff {
    /// A back-off starting at `base`, doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u32>> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one more failure of the object and returns how long to wait before the next attempt.
    pub fn failed(&self, namespace: &str, name: &str) -> Duration {
        let mut failures = self.failures();
        let n = failures.entry((namespace.to_owned(), name.to_owned())).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(self.base, *n, self.cap)
    }

    /// Forgets the object's failures (its reconcile succeeded).
    pub fn succeeded(&self, namespace: &str, name: &str) {
        self.failures().remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Consecutive failures of the object so far.
    pub fn count(&self, namespace: &str, name: &str) -> u32 {
        self.failures()
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// The `error_policy` of both controllers: logs the failed reconcile with its category (the metric label) and
/// requeues the object after its back-off.
pub fn requeue_after_error(
    backoff: &ErrorBackoff,
    namespace: &str,
    name: &str,
    category: &str,
    error: &dyn std::fmt::Display,
) -> kube::runtime::controller::Action {
    let delay = backoff.failed(namespace, name);
    tracing::warn!(%namespace, %name, category, %error, retry_in = ?delay, "reconcile failed");
    kube::runtime::controller::Action::requeue(delay)
}

/// [`requeue_after_error`] for an object: the `error_policy` both controllers pass to `Controller::run`.
pub fn requeue_object<K: kube::ResourceExt>(
    backoff: &ErrorBackoff,
    object: &K,
    category: &str,
    error: &dyn std::fmt::Display,
) -> kube::runtime::controller::Action {
    requeue_after_error(
        backoff,
        &object.namespace().unwrap_or_default(),
        &object.name_any(),
        category,
        error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_per_consecutive_failure_up_to_the_cap() {
        let b = ErrorBackoff::new(5 * S, 60 * S);
        let delays: Vec<_> = (0..6).map(|_| b.failed("ns", "a").as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 60, 60]);
    }

    #[test]
    fn a_success_resets_only_that_object() {
        let b = ErrorBackoff::new(5 * S, 60 * S);
        b.failed("ns", "a");
        b.failed("ns", "a");
        b.failed("ns", "b");
        b.succeeded("ns", "a");
        assert_eq!(b.count("ns", "a"), 0);
        assert_eq!(b.count("ns", "b"), 1);
        assert_eq!(b.failed("ns", "a"), 5 * S);
    }

    #[test]
    fn the_same_name_in_two_namespaces_backs_off_separately() {
        let b = ErrorBackoff::new(5 * S, 60 * S);
        b.failed("team-a", "x");
        b.failed("team-a", "x");
        assert_eq!(b.failed("team-b", "x"), 5 * S);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        assert_eq!(backoff_delay(5 * S, u32::MAX, 300 * S), 300 * S);
    }
}
