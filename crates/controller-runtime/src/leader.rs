//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder reconciles; standbys wait and take over when
//! the holder stops renewing. Updates use the Lease's resourceVersion, so two candidates can never both win.
//!
//! The holder renews every `renew_period`; a Lease not renewed for `lease_duration` is free. A holder that cannot
//! renew within `lease_duration` considers itself deposed ([`Leadership::lost`] resolves) and must stop acting.
//! On a clean shutdown the holder releases the Lease so a standby takes over at once.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;

/// Election settings.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease (the controller's own namespace).
    pub namespace: String,
    /// Lease name, e.g. `packer-build-controller`.
    pub lease_name: String,
    /// This candidate (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and candidates retry.
    pub renew_period: Duration,
}

impl LeaderConfig {
    /// Defaults: 15 s lease, renewed every 5 s.
    pub fn new(namespace: impl Into<String>, lease_name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
        }
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

fn is_free_or_mine(lease: &Lease, me: &str, duration: Duration, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == me => true,
        Some(_) => {
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let valid_for = spec
                .lease_duration_seconds
                .map_or(duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
            renewed.is_none_or(|r| r.checked_add(valid_for).is_ok_and(|expiry| expiry <= now))
        }
    }
}

/// One attempt to take or renew the Lease. `Ok(true)` when this candidate holds it afterwards.
async fn try_acquire(api: &Api<Lease>, config: &LeaderConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&config.lease_name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            if !is_free_or_mine(&lease, &config.identity, config.lease_duration, now) {
                return Ok(false);
            }
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(seconds);
            // The resourceVersion in `lease` makes this a compare-and-swap.
            match api.replace(&config.lease_name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this candidate holds the Lease, then renews it in the background.
pub async fn acquire(client: Client, config: LeaderConfig) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    loop {
        match try_acquire(&api, &config).await {
            Ok(true) => break,
            Ok(false) => tracing::debug!(lease = %config.lease_name, "another replica leads; waiting"),
            Err(error) => tracing::warn!(%error, "leader election: could not read or update the Lease"),
        }
        tokio::time::sleep(config.renew_period).await;
    }
    tracing::info!(lease = %config.lease_name, identity = %config.identity, "became leader");
    let (tx, lost) = watch::channel(false);
    let renew_api = api.clone();
    let renew_config = config.clone();
    let renewer = tokio::spawn(async move {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(renew_config.renew_period).await;
            match try_acquire(&renew_api, &renew_config).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leadership taken over by another replica");
                    let _ = tx.send(true);
                    return;
                }
                Err(error) => tracing::warn!(%error, "could not renew the Lease"),
            }
            if last_renewal.elapsed() >= renew_config.lease_duration {
                tracing::error!("could not renew the Lease within its duration; stepping down");
                let _ = tx.send(true);
                return;
            }
        }
    });
    Leadership {
        api,
        config,
        lost,
        renewer,
    }
}

impl Leadership {
    /// Resolves when leadership is lost; the caller must stop reconciling.
    pub async fn lost(&mut self) {
        while !*self.lost.borrow() {
            if self.lost.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stops renewing and frees the Lease so a standby takes over at once.
    pub async fn release(self) {
        self.renewer.abort();
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: &str, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: Some(MicroTime(renewed.parse().expect("ts"))),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_free_when_empty_mine_or_expired() {
        let now: Timestamp = "2026-01-01T00:00:20Z".parse().expect("ts");
        let d = Duration::from_secs(15);
        assert!(is_free_or_mine(&lease(None, "2026-01-01T00:00:19Z", 15), "me", d, now));
        assert!(is_free_or_mine(
            &lease(Some("me"), "2026-01-01T00:00:19Z", 15),
            "me",
            d,
            now
        ));
        assert!(!is_free_or_mine(
            &lease(Some("other"), "2026-01-01T00:00:10Z", 15),
            "me",
            d,
            now
        ));
        assert!(is_free_or_mine(
            &lease(Some("other"), "2026-01-01T00:00:05Z", 15),
            "me",
            d,
            now
        ));
    }
}
