//! Liveness of the reconcile loop, for `/healthz`: the process can be alive while the controller is stuck (a
//! reconcile waiting forever on a dead connection, a watch that keeps failing). Kubernetes restarts a pod whose
//! liveness probe fails; this reports when there is a reason to.
//!
//! Two signals, both judged against `stall_after`:
//! - a reconcile that has been running for longer (every AWS and API call has its own timeout, so a healthy
//!   reconcile ends long before);
//! - watch errors arriving without a break for longer (the API server unreachable, RBAC removed): a streak ends
//!   when no error came for [`STREAK_GAP`] or a reconcile succeeded.
//!
//! An idle controller (nothing to reconcile, no errors) is healthy, and so is a standby.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

/// Watch errors closer together than this belong to one streak (kube's watcher backs off up to 30 s).
pub const STREAK_GAP: Duration = Duration::from_secs(90);

/// Why the controller is not live.
#[derive(Debug, PartialEq, Eq)]
pub enum Stall {
    /// A reconcile has been running for this long.
    Reconcile(Duration),
    /// The watch has been failing for this long.
    Watch(Duration),
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reconcile(d) => write!(f, "a reconcile has been running for {}s", d.as_secs()),
            Self::Watch(d) => write!(f, "the watch has been failing for {}s", d.as_secs()),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    running: BTreeMap<u64, Instant>,
    /// First and last watch error of the current streak.
    watch_errors: Option<(Instant, Instant)>,
}

impl State {
    fn judge(&self, now: Instant, stall_after: Duration) -> Option<Stall> {
        if let Some(oldest) = self.running.values().min() {
            let running = now.saturating_duration_since(*oldest);
            if running >= stall_after {
                return Some(Stall::Reconcile(running));
            }
        }
        if let Some((first, last)) = self.watch_errors
            && now.saturating_duration_since(last) < STREAK_GAP
        {
            let failing = now.saturating_duration_since(first);
            if failing >= stall_after {
                return Some(Stall::Watch(failing));
            }
        }
        None
    }
}

/// Shared liveness record of one controller process.
#[derive(Clone, Debug)]
pub struct Liveness {
    state: Arc<Mutex<State>>,
    stall_after: Duration,
}

/// Marks a reconcile as running until dropped.
#[derive(Debug)]
pub struct Running {
    state: Arc<Mutex<State>>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.state).running.remove(&self.id);
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Liveness {
    /// A record that reports a stall after `stall_after`.
    pub fn new(stall_after: Duration) -> Self {
        Self {
            state: Arc::default(),
            stall_after,
        }
    }

    /// Call at the start of a reconcile; keep the guard until it ends (a cancelled reconcile drops it too).
    pub fn reconcile_started(&self) -> Running {
        let mut state = lock(&self.state);
        let id = state.next;
        state.next += 1;
        state.running.insert(id, Instant::now());
        Running {
            state: self.state.clone(),
            id,
        }
    }

    /// Call with every item the controller's stream yields: a watch (queue) error extends the streak, a
    /// successful reconcile ends it.
    pub fn observe<T, E>(&self, result: &Result<T, kube::runtime::controller::Error<E, kube::runtime::watcher::Error>>)
    where
        E: std::error::Error + 'static,
    {
        let now = Instant::now();
        let mut state = lock(&self.state);
        match result {
            Err(kube::runtime::controller::Error::QueueError(_)) => {
                state.watch_errors = match state.watch_errors {
                    Some((first, last)) if now.saturating_duration_since(last) < STREAK_GAP => Some((first, now)),
                    _ => Some((now, now)),
                };
            }
            Ok(_) => state.watch_errors = None,
            Err(_) => {}
        }
    }

    /// The `for_each` of both controllers' `Controller::run` streams: [`Liveness::observe`] each item, log its error
    /// at debug level (a failed reconcile was already logged by the error policy).
    pub fn observer<T, E>(
        &self,
    ) -> impl FnMut(
        Result<T, kube::runtime::controller::Error<E, kube::runtime::watcher::Error>>,
    ) -> std::future::Ready<()>
    + use<T, E>
    where
        E: std::error::Error + 'static,
    {
        let liveness = self.clone();
        move |result| {
            liveness.observe(&result);
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile error");
            }
            std::future::ready(())
        }
    }

    /// `Err` with the reason when the controller is stuck.
    pub fn check(&self) -> Result<(), Stall> {
        lock(&self.state)
            .judge(Instant::now(), self.stall_after)
            .map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(600);

    #[test]
    fn idle_is_live() {
        assert_eq!(State::default().judge(Instant::now(), STALL), None);
    }

    #[test]
    fn a_reconcile_running_longer_than_the_limit_is_a_stall() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.running.insert(1, t0);
        s.running.insert(2, t0 + Duration::from_secs(500));
        assert_eq!(s.judge(t0 + Duration::from_secs(599), STALL), None);
        assert_eq!(
            s.judge(t0 + Duration::from_secs(600), STALL),
            Some(Stall::Reconcile(Duration::from_secs(600)))
        );
    }

    #[test]
    fn a_long_unbroken_watch_error_streak_is_a_stall_and_a_gap_ends_it() {
        let t0 = Instant::now();
        let mut s = State {
            watch_errors: Some((t0, t0 + Duration::from_secs(590))),
            ..State::default()
        };
        assert_eq!(
            s.judge(t0 + Duration::from_secs(600), STALL),
            Some(Stall::Watch(Duration::from_secs(600)))
        );
        // No error for longer than the gap: the watch recovered (errors are not cleared by an idle watch).
        s.watch_errors = Some((t0, t0 + Duration::from_secs(100)));
        assert_eq!(s.judge(t0 + Duration::from_secs(600), STALL), None);
    }

    #[test]
    fn the_guard_clears_a_reconcile_when_dropped() {
        let live = Liveness::new(Duration::ZERO);
        let running = live.reconcile_started();
        assert!(matches!(live.check(), Err(Stall::Reconcile(_))));
        drop(running);
        assert_eq!(live.check(), Ok(()));
    }
}
