//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics: only the holder reconciles;
//! standbys wait and take over when the holder stops renewing. Updates carry the Lease's resourceVersion, so two
//! candidates can never both win the same record.
//!
//! Three durations, as in client-go (`--leader-elect-*`):
//! - `lease_duration`: how long a standby waits, **measured on its own monotonic clock from the moment it saw the
//!   record last change**, before it may take the Lease. The holder's `renewTime` is never compared with the local
//!   wall clock, so a skewed clock cannot make a live Lease look expired.
//! - `renew_deadline`: the holder steps down when it has not renewed for this long. Every attempt (read and
//!   write) is bounded by the time left to this deadline, so a request stuck on a dead connection cannot keep a
//!   deposed leader running. Shorter than `lease_duration`: the holder stops before any standby can start.
//! - `retry_period`: how often the holder renews and standbys retry.
//!
//! Why the holder is always first to stop: a standby that takes over at `t` saw the holder's last write at some
//! `t_seen <= t - lease_duration`; that write was sent at `t_sent <= t_seen`. The holder counts its deadline from
//! `t_sent`, so it stopped by `t_sent + renew_deadline < t`. [`Leadership::run`] drops (cancels) the work when
//! leadership ends, and the binaries then exit.

use std::{future::Future, sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::{sync::watch, time::Instant};

/// The wall clock used for the times written into the Lease (`acquireTime`, `renewTime`). Those are for humans
/// and other tools; the election itself never reads them. Replaceable so tests can skew it.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl WallClock {
    /// A clock `offset` away from the system clock (tests).
    pub fn skewed(offset: jiff::SignedDuration) -> Self {
        Self(Arc::new(move || {
            Timestamp::now()
                .checked_add(offset)
                .unwrap_or_else(|_| Timestamp::now())
        }))
    }

    fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self(Arc::new(Timestamp::now))
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

/// Election settings.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease (the controller's own namespace).
    pub namespace: String,
    /// Lease name (by default the Helm release's full name, so two releases each lead).
    pub lease_name: String,
    /// This candidate (the pod name).
    pub identity: String,
    /// How long a standby waits after the record last changed before it takes the Lease.
    pub lease_duration: Duration,
    /// The holder steps down when it could not renew for this long; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the holder renews and candidates retry.
    pub retry_period: Duration,
    /// Clock for the times written into the Lease.
    pub clock: WallClock,
}

/// Settings that cannot work together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The holder would still act after a standby may take over.
    #[error("the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?})")]
    DeadlineNotBeforeExpiry {
        /// The renew deadline.
        renew_deadline: Duration,
        /// The lease duration.
        lease_duration: Duration,
    },
    /// The holder would not retry before its deadline passes.
    #[error("the retry period ({retry_period:?}) must be shorter than the renew deadline ({renew_deadline:?})")]
    RetryNotBeforeDeadline {
        /// The retry period.
        retry_period: Duration,
        /// The renew deadline.
        renew_deadline: Duration,
    },
}

impl LeaderConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>, lease_name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            clock: WallClock::default(),
        }
    }

    /// Refuses durations under which a deposed holder could act next to a new one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.renew_deadline >= self.lease_duration {
            return Err(ConfigError::DeadlineNotBeforeExpiry {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::RetryNotBeforeDeadline {
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// The part of a Lease record whose change restarts a standby's wait (client-go compares the whole record).
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    acquire_time: Option<Timestamp>,
    transitions: Option<i32>,
    duration_seconds: Option<i32>,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Self {
        Self {
            holder: spec.and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty()),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            acquire_time: spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0),
            transitions: spec.and_then(|s| s.lease_transitions),
            duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
        }
    }
}

/// What a candidate remembers between attempts: the record it last saw and when (its own monotonic clock).
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(Record, Instant)>,
}

/// What to do with the Lease as read.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Free, or expired by our own observation: write ourselves in.
    Take,
    /// Ours: renew.
    Renew,
    /// Another holder, still valid for this long by our own observation.
    Wait,
}

impl Observer {
    /// Notes the record read at `now` and decides. The wait is counted from when this candidate first saw the
    /// current record, with the duration the record states (ours when it states none).
    fn step(&mut self, spec: Option<&LeaseSpec>, me: &str, default_duration: Duration, now: Instant) -> Step {
        let record = Record::of(spec);
        let seen_at = match &self.seen {
            Some((previous, at)) if *previous == record => *at,
            _ => now,
        };
        self.seen = Some((record.clone(), seen_at));
        match record.holder.as_deref() {
            None => Step::Take,
            Some(holder) if holder == me => Step::Renew,
            Some(_) => {
                let valid_for = record
                    .duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(default_duration, Duration::from_secs);
                if now.duration_since(seen_at) >= valid_for {
                    Step::Take
                } else {
                    Step::Wait
                }
            }
        }
    }

    /// Notes our own successful write, so a later read of it is not a change.
    fn wrote(&mut self, spec: Option<&LeaseSpec>, now: Instant) {
        self.seen = Some((Record::of(spec), now));
    }
}

/// One attempt to take or renew the Lease. `Ok(true)` when this candidate holds it afterwards.
async fn try_acquire(api: &Api<Lease>, config: &LeaderConfig, observer: &mut Observer) -> Result<bool, kube::Error> {
    let seconds = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let wall = config.clock.now();
    let Some(mut lease) = api.get_opt(&config.lease_name).await? else {
        let spec = LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(wall)),
            renew_time: Some(MicroTime(wall)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.lease_name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                observer.wrote(created.spec.as_ref(), Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let step = observer.step(
        lease.spec.as_ref(),
        &config.identity,
        config.lease_duration,
        Instant::now(),
    );
    if step == Step::Wait {
        return Ok(false);
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if step == Step::Take {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(wall));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(wall));
    spec.lease_duration_seconds = Some(seconds);
    // The resourceVersion in `lease` makes this a compare-and-swap.
    match api.replace(&config.lease_name, &PostParams::default(), &lease).await {
        Ok(written) => {
            observer.wrote(written.spec.as_ref(), Instant::now());
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Held leadership: renewed in the background until released or lost.
#[derive(Debug)]
pub struct Leadership {
    api: Api<Lease>,
    config: LeaderConfig,
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

/// How [`Leadership::run`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The work ended on its own (a clean shutdown); the Lease was released.
    Finished,
    /// Leadership was lost (not renewed within the deadline, or taken); the work was cancelled.
    Lost,
}

/// Waits until this candidate holds the Lease, then renews it in the background. Each attempt is bounded by the
/// retry period, so a dead connection never stalls the candidate.
pub async fn acquire(client: Client, config: LeaderConfig) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut observer = Observer::default();
    let acquired_at = loop {
        let started = Instant::now();
        match tokio::time::timeout(config.retry_period, try_acquire(&api, &config, &mut observer)).await {
            Ok(Ok(true)) => break started,
            Ok(Ok(false)) => tracing::debug!(lease = %config.lease_name, "another replica leads; waiting"),
            Ok(Err(error)) => tracing::warn!(%error, "leader election: could not read or update the Lease"),
            Err(_) => tracing::warn!("leader election: the API server did not answer within the retry period"),
        }
        tokio::time::sleep_until(started + config.retry_period).await;
    };
    tracing::info!(lease = %config.lease_name, identity = %config.identity, "became leader");
    let (tx, lost) = watch::channel(false);
    let renewer = tokio::spawn(renew(api.clone(), config.clone(), observer, acquired_at, tx));
    Leadership {
        api,
        config,
        lost,
        renewer,
    }
}

/// Renews every retry period; steps down (sends `true`) when the Lease is taken or was not renewed within the
/// renew deadline counted from the start of the last successful attempt.
async fn renew(
    api: Api<Lease>,
    config: LeaderConfig,
    mut observer: Observer,
    mut renewed_at: Instant,
    lost: watch::Sender<bool>,
) {
    loop {
        tokio::time::sleep(config.retry_period).await;
        let started = Instant::now();
        let deadline = renewed_at + config.renew_deadline;
        let bound = deadline.saturating_duration_since(started).min(config.retry_period);
        match tokio::time::timeout(bound, try_acquire(&api, &config, &mut observer)).await {
            Ok(Ok(true)) => renewed_at = started,
            Ok(Ok(false)) => {
                tracing::error!(lease = %config.lease_name, "leadership taken over by another replica");
                let _ = lost.send(true);
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, "could not renew the Lease"),
            Err(_) => tracing::warn!("renewing the Lease timed out"),
        }
        if Instant::now() >= deadline && renewed_at != started {
            tracing::error!(
                lease = %config.lease_name,
                deadline = ?config.renew_deadline,
                "could not renew the Lease within the renew deadline; stepping down"
            );
            let _ = lost.send(true);
            return;
        }
    }
}

impl Leadership {
    /// Resolves when leadership is lost; the caller must stop acting at once.
    pub async fn lost(&mut self) {
        while !*self.lost.borrow() {
            if self.lost.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs `work` while this replica leads. When leadership is lost the work is dropped (in-flight reconciles
    /// are cancelled at their next await) before this returns [`Outcome::Lost`]; when the work ends, the Lease is
    /// released so a standby takes over at once.
    pub async fn run(mut self, work: impl Future<Output = ()>) -> Outcome {
        tokio::select! {
            () = work => {
                self.release().await;
                Outcome::Finished
            }
            () = self.lost() => {
                self.renewer.abort();
                Outcome::Lost
            }
        }
    }

    /// Stops renewing and frees the Lease so a standby takes over at once.
    pub async fn release(self) {
        self.renewer.abort();
        let release = async {
            if let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease_name).await
                && let Some(spec) = lease.spec.as_mut()
                && spec.holder_identity.as_deref() == Some(self.config.identity.as_str())
            {
                spec.holder_identity = None;
                spec.renew_time = None;
                if let Err(error) = self
                    .api
                    .replace(&self.config.lease_name, &PostParams::default(), &lease)
                    .await
                {
                    tracing::warn!(%error, "could not release the Lease");
                }
            }
        };
        if tokio::time::timeout(self.config.renew_deadline, release).await.is_err() {
            tracing::warn!("releasing the Lease timed out; standbys take over once it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(renewed.parse().expect("ts"))),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn a_free_lease_is_taken_and_our_own_renewed() {
        let now = Instant::now();
        let mut o = Observer::default();
        assert_eq!(o.step(None, "me", D, now), Step::Take);
        assert_eq!(
            o.step(Some(&spec(None, "2026-01-01T00:00:00Z", 15)), "me", D, now),
            Step::Take
        );
        assert_eq!(
            o.step(Some(&spec(Some(""), "2026-01-01T00:00:00Z", 15)), "me", D, now),
            Step::Take
        );
        assert_eq!(
            o.step(Some(&spec(Some("me"), "2000-01-01T00:00:00Z", 15)), "me", D, now),
            Step::Renew
        );
    }

    #[test]
    fn expiry_is_counted_from_when_this_candidate_saw_the_record_not_from_renew_time() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        // A renewTime years in the past (a holder whose clock is behind, or ours ahead): still live at first sight.
        let old = spec(Some("other"), "2000-01-01T00:00:00Z", 15);
        assert_eq!(o.step(Some(&old), "me", D, t0), Step::Wait);
        assert_eq!(o.step(Some(&old), "me", D, t0 + Duration::from_secs(14)), Step::Wait);
        assert_eq!(o.step(Some(&old), "me", D, t0 + Duration::from_secs(15)), Step::Take);
    }

    #[test]
    fn every_change_of_the_record_restarts_the_wait() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        assert_eq!(
            o.step(Some(&spec(Some("other"), "2026-01-01T00:00:00Z", 15)), "me", D, t0),
            Step::Wait
        );
        let renewed = spec(Some("other"), "2026-01-01T00:00:10Z", 15);
        assert_eq!(
            o.step(Some(&renewed), "me", D, t0 + Duration::from_secs(10)),
            Step::Wait
        );
        assert_eq!(
            o.step(Some(&renewed), "me", D, t0 + Duration::from_secs(24)),
            Step::Wait
        );
        assert_eq!(
            o.step(Some(&renewed), "me", D, t0 + Duration::from_secs(25)),
            Step::Take
        );
    }

    #[test]
    fn the_duration_stated_in_the_record_wins_over_ours() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        let long = spec(Some("other"), "2026-01-01T00:00:00Z", 60);
        assert_eq!(o.step(Some(&long), "me", D, t0), Step::Wait);
        assert_eq!(o.step(Some(&long), "me", D, t0 + Duration::from_secs(30)), Step::Wait);
        assert_eq!(o.step(Some(&long), "me", D, t0 + Duration::from_secs(60)), Step::Take);
    }

    #[test]
    fn durations_that_let_a_deposed_holder_overlap_are_refused() {
        let mut c = LeaderConfig::new("ns", "lease", "me");
        assert_eq!(c.validate(), Ok(()));
        c.renew_deadline = c.lease_duration;
        assert!(matches!(c.validate(), Err(ConfigError::DeadlineNotBeforeExpiry { .. })));
        c.renew_deadline = Duration::from_secs(10);
        c.retry_period = Duration::from_secs(10);
        assert!(matches!(c.validate(), Err(ConfigError::RetryNotBeforeDeadline { .. })));
    }
}
