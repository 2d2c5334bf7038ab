//! Leader election against the in-memory API server: one leader at a time, a standby takes over after a release
//! or once the holder stops renewing; a leader cut off from the API server stops before a standby starts; a
//! skewed clock does not let a standby take a live Lease.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use controller_runtime::leader::{LeaderConfig, Outcome, WallClock, acquire};
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::ConfigMap,
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
};
use kube_sim::{ApiServer, ServerOptions};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

fn config(identity: &str) -> LeaderConfig {
    let mut c = LeaderConfig::new("default", "test-controller", identity);
    c.lease_duration = Duration::from_secs(2);
    c.renew_deadline = Duration::from_millis(1200);
    c.retry_period = Duration::from_millis(200);
    c.validate().expect("valid durations");
    c
}

/// A client of `url` whose requests the server records as made by `user`.
fn client_as(url: &str, user: &str) -> Client {
    let mut config = Config::new(url.parse().expect("url"));
    config.headers.push((
        axum::http::header::AUTHORIZATION,
        format!("Bearer {user}").parse().expect("header"),
    ));
    Client::try_from(config).expect("client")
}

async fn server() -> (ApiServer, Client) {
    let server = ApiServer::start(ServerOptions::default()).await.expect("server");
    let client = client_as(&server.url(), "admin");
    (server, client)
}

/// What a leader does while it leads: a request every 50 ms, recorded by the server as `user`. It stands for the
/// AWS calls a real leader makes, which do not pass through the API server connection that may be cut.
async fn work(client: Client) {
    let probes: Api<ConfigMap> = Api::default_namespaced(client);
    loop {
        let _ = probes.get_opt("probe").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy that forwards until told to black-hole: from then on it accepts and reads but forwards nothing and
/// answers nothing, as a dead network path or a hung API server would.
async fn black_hole_proxy(upstream: std::net::SocketAddr) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let holed = Arc::new(AtomicBool::new(false));
    let flag = holed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let flag = flag.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = {
                    let flag = flag.clone();
                    async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if !flag.load(Ordering::SeqCst) && sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                };
                let down = async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !flag.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(up, down);
            });
        }
    });
    (url, holed)
}

#[tokio::test]
async fn only_one_candidate_leads_and_a_standby_takes_over_after_release() {
    let (_server, client) = server().await;
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
    let (_server, client) = server().await;
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
        started.elapsed() >= Duration::from_secs(2),
        "took over a lease before the standby had watched it unchanged for its whole duration"
    );
    let spec = leases.get("test-controller").await.expect("lease").spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    leader.release().await;
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_working_before_a_standby_starts() {
    let (server, client) = server().await;
    let (proxy_url, black_hole) = black_hole_proxy(server.addr()).await;

    // "a" reaches the API server through the proxy; its work (AWS calls in a real controller) does not.
    let a = acquire(client_as(&proxy_url, "a-election"), config("a")).await;
    let a_run = tokio::spawn(a.run(work(client_as(&server.url(), "a"))));
    let url = server.url();
    let b = tokio::spawn(async move {
        acquire(client_as(&url, "b-election"), config("b"))
            .await
            .run(work(client_as(&url, "b")))
            .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    black_hole.store(true, Ordering::SeqCst);

    let outcome = tokio::time::timeout(Duration::from_secs(5), a_run)
        .await
        .expect("the cut-off leader steps down within its renew deadline")
        .expect("task");
    assert_eq!(outcome, Outcome::Lost);
    // The standby takes over once the Lease has gone unrenewed for its duration.
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let holder = leases
            .get("test-controller")
            .await
            .expect("lease")
            .spec
            .and_then(|s| s.holder_identity);
        if holder.as_deref() == Some("b") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.abort();

    let record = server.requests();
    let last_a = record
        .iter()
        .rposition(|r| r.user == "a")
        .expect("a worked while leading");
    let first_b = record
        .iter()
        .position(|r| r.user == "b")
        .expect("b worked once leading");
    assert!(
        last_a < first_b,
        "the old leader worked after the new one started (request {last_a} vs {first_b})"
    );
}

#[tokio::test]
async fn a_standby_with_a_skewed_clock_does_not_take_a_live_lease() {
    let (_server, client) = server().await;
    // The holder's clock is an hour behind and the standby's an hour ahead: compared with the standby's clock,
    // every renewTime the holder writes is two hours old.
    let mut holder_config = config("a");
    holder_config.clock = WallClock::skewed(jiff::SignedDuration::from_hours(-1));
    let mut standby_config = config("b");
    standby_config.clock = WallClock::skewed(jiff::SignedDuration::from_hours(1));

    let holder = acquire(client.clone(), holder_config).await;
    let standby = tokio::spawn(acquire(client.clone(), standby_config));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !standby.is_finished(),
        "a standby took a Lease its holder renews because of clock skew"
    );
    holder.release().await;
    let taken = tokio::time::timeout(Duration::from_secs(5), standby)
        .await
        .expect("the standby leads once the Lease is released")
        .expect("task");
    taken.release().await;
}
