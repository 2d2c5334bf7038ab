//! Leader election against the in-memory API server: one leader at a time, a standby takes over after a release
//! or once the holder stops renewing.

use std::time::Duration;

use controller_runtime::leader::{LeaderConfig, acquire};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
};
use kube_sim::{ApiServer, ServerOptions};

fn config(identity: &str) -> LeaderConfig {
    let mut c = LeaderConfig::new("default", "test-controller", identity);
    c.lease_duration = Duration::from_secs(2);
    c.renew_period = Duration::from_millis(200);
    c
}

async fn client() -> (ApiServer, Client) {
    let server = ApiServer::start(ServerOptions::default()).await.expect("server");
    let client = Client::try_from(Config::new(server.url().parse().expect("url"))).expect("client");
    (server, client)
}

#[tokio::test]
async fn only_one_candidate_leads_and_a_standby_takes_over_after_release() {
    let (_server, client) = client().await;
    let first = acquire(client.clone(), config("a")).await;
    let standby = tokio::spawn(acquire(client.clone(), config("b")));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !standby.is_finished(),
        "a second candidate must not lead while the first renews"
    );
    first.release().await;
    let second = tokio::time::timeout(Duration::from_secs(5), standby)
        .await
        .expect("takeover after release")
        .expect("task");
    let lease: Api<Lease> = Api::default_namespaced(client.clone());
    let holder = lease
        .get("test-controller")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("b"));
    second.release().await;
}

#[tokio::test]
async fn a_lease_left_by_a_crashed_holder_is_taken_over_only_after_it_expires() {
    let (_server, client) = client().await;
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("test-controller".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("crashed".into()),
            lease_duration_seconds: Some(2),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await.expect("lease");
    let started = tokio::time::Instant::now();
    let leader = tokio::time::timeout(Duration::from_secs(10), acquire(client.clone(), config("b")))
        .await
        .expect("takeover");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "took over a lease that had not expired"
    );
    let spec = leases.get("test-controller").await.expect("lease").spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    leader.release().await;
}
