//! Delivery against local HTTP servers that behave like Slack's Web API, a Discord webhook and a generic receiver.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use notifier::{
    DeliveryError, DeliveryPolicy, DiscordSink, Notification, SIGNATURE_HEADER, Severity, Sink, SlackSink, WebhookSink,
    deliver, signature,
};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    throttle_once: Arc<Mutex<bool>>,
}

const TOKEN: &str = "xoxb-sentinel-token";

async fn slack(State(state): State<Received>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let throttled = {
        let mut once = state.throttle_once.lock().expect("lock");
        std::mem::replace(&mut *once, false)
    };
    if throttled {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            json!({"ok": false, "error": "ratelimited"}).to_string(),
        );
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if auth != format!("Bearer {TOKEN}") {
        return (
            StatusCode::OK,
            [("retry-after", "0")],
            json!({"ok": false, "error": "invalid_auth"}).to_string(),
        );
    }
    let value: Value = serde_json::from_slice(&body).expect("json body");
    state.bodies.lock().expect("lock").push((headers, value));
    (
        StatusCode::OK,
        [("retry-after", "0")],
        json!({"ok": true, "ts": "1.2"}).to_string(),
    )
}

async fn record(State(state): State<Received>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let value: Value = serde_json::from_slice(&body).expect("json body");
    state.bodies.lock().expect("lock").push((headers.clone(), value));
    let raw = String::from_utf8(body.to_vec()).expect("utf8");
    // Keep the raw body for signature checks.
    state.bodies.lock().expect("lock").push((headers, Value::String(raw)));
    StatusCode::NO_CONTENT
}

async fn server(state: Received) -> String {
    let app = Router::new()
        .route("/api/chat.postMessage", post(slack))
        .route("/discord", post(record))
        .route("/hook", post(record))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

fn note(severity: Severity) -> Notification {
    Notification {
        kind: "PackerBuilder".into(),
        namespace: "default".into(),
        name: "pb".into(),
        from: Some("Building".into()),
        to: "Ready".into(),
        reason: "BuildSucceeded".into(),
        message: "built and verified AMI ami-0123".into(),
        severity,
        base_ami: Some("ami-base".into()),
        ami: Some("ami-0123".into()),
        node_group: None,
    }
}

fn fast() -> DeliveryPolicy {
    DeliveryPolicy {
        backoff: Duration::from_millis(10),
        ..DeliveryPolicy::default()
    }
}

#[tokio::test]
async fn slack_posts_once_per_channel_with_the_token_and_the_severity_colour() {
    let state = Received::default();
    let base = server(state.clone()).await;
    let sink = Sink::Slack(SlackSink::new(
        format!("{base}/api"),
        TOKEN,
        vec!["C1".into(), "C2".into()],
    ));
    deliver(&reqwest::Client::new(), &sink, &note(Severity::Failure), fast())
        .await
        .expect("delivered");
    let bodies = state.bodies.lock().expect("lock").clone();
    let channels: Vec<&str> = bodies.iter().filter_map(|(_, b)| b["channel"].as_str()).collect();
    assert_eq!(
        channels,
        ["C1", "C2"],
        "one message per channel, never a comma-joined list"
    );
    assert!(bodies.iter().all(|(_, b)| b["attachments"][0]["color"] == "#E01E5A"));
}

#[tokio::test]
async fn slack_429_is_retried_after_retry_after() {
    let state = Received::default();
    *state.throttle_once.lock().expect("lock") = true;
    let base = server(state.clone()).await;
    let sink = Sink::Slack(SlackSink::new(format!("{base}/api"), TOKEN, vec!["C1".into()]));
    let started = std::time::Instant::now();
    deliver(&reqwest::Client::new(), &sink, &note(Severity::Info), fast())
        .await
        .expect("delivered after the 429");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(state.bodies.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_revoked_slack_token_is_reported_by_name_without_the_token() {
    let state = Received::default();
    let base = server(state.clone()).await;
    let sink = Sink::Slack(SlackSink::new(format!("{base}/api"), "xoxb-revoked", vec!["C1".into()]));
    let err = deliver(&reqwest::Client::new(), &sink, &note(Severity::Info), fast())
        .await
        .expect_err("refused");
    assert_eq!(
        err,
        DeliveryError::Refused {
            channel: "slack",
            reason: "invalid_auth".into()
        }
    );
    assert_eq!(err.reason(), "invalid_auth");
    assert!(
        !format!("{err} {err:?} {sink:?}").contains("xoxb-revoked"),
        "the token leaked"
    );
}

#[tokio::test]
async fn discord_receives_an_embed_with_the_colour() {
    let state = Received::default();
    let base = server(state.clone()).await;
    let sink = Sink::Discord(DiscordSink::new(format!("{base}/discord")));
    deliver(&reqwest::Client::new(), &sink, &note(Severity::Warning), fast())
        .await
        .expect("delivered");
    let bodies = state.bodies.lock().expect("lock").clone();
    assert_eq!(bodies[0].1["embeds"][0]["color"], 0x00EC_B22E);
    assert_eq!(
        bodies[0].1["embeds"][0]["title"],
        "PackerBuilder default/pb: Building -> Ready (BuildSucceeded)"
    );
}

#[tokio::test]
async fn webhook_receives_the_model_with_a_verifiable_signature() {
    let state = Received::default();
    let base = server(state.clone()).await;
    let key = b"sentinel-signing-key".to_vec();
    let sink = Sink::Webhook(WebhookSink::new(format!("{base}/hook"), Some(key.clone())));
    deliver(&reqwest::Client::new(), &sink, &note(Severity::Success), fast())
        .await
        .expect("delivered");
    let bodies = state.bodies.lock().expect("lock").clone();
    assert_eq!(
        bodies[0].1,
        serde_json::to_value(note(Severity::Success)).expect("model")
    );
    let raw = bodies[1].1.as_str().expect("raw");
    let header = bodies[1]
        .0
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("signature header");
    assert_eq!(header, signature(&key, raw.as_bytes()));
    assert_ne!(header, signature(b"other-key", raw.as_bytes()));
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_after_bounded_retries_without_naming_the_url() {
    let sink = Sink::Discord(DiscordSink::new("http://127.0.0.1:9/api/webhooks/123/sentinel-secret"));
    let started = std::time::Instant::now();
    let err = deliver(&reqwest::Client::new(), &sink, &note(Severity::Info), fast())
        .await
        .expect_err("unreachable");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, DeliveryError::Transport { .. }));
    assert!(!err.to_string().contains("sentinel-secret"), "{err}");
}
