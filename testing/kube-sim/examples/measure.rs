//! Rough figures for the in-memory API server (run with `cargo run --release -p kube-sim --example measure`):
//! start-up time, create-to-watch-event latency, time to list 1,000 objects, and resident memory. Client and
//! server share the process, so the RSS is an upper bound for the server.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Config,
    api::{ListParams, PostParams, WatchEvent, WatchParams},
};
use kube_sim::{ApiServer, ServerOptions};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let server = ApiServer::start(ServerOptions::default()).await?;
    let startup = started.elapsed();
    let client = Client::try_from(Config::new(server.url().parse()?))?;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);

    let mut watch = cms.watch(&WatchParams::default(), "0").await?.boxed();
    let mut latencies = Vec::new();
    for i in 0..200 {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("lat-{i}")}}))?;
        let sent = Instant::now();
        cms.create(&PostParams::default(), &cm).await?;
        loop {
            match watch.try_next().await? {
                Some(WatchEvent::Added(o)) if o.metadata.name.as_deref() == Some(&format!("lat-{i}")) => break,
                Some(_) => {}
                None => anyhow::bail!("watch ended"),
            }
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort();

    for i in 0..800 {
        let cm: ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": format!("bulk-{i}"), "labels": {"app": "bench"}}, "data": {"k": "v".repeat(64)}}),
        )?;
        cms.create(&PostParams::default(), &cm).await?;
    }
    let runs = 20;
    let list_started = Instant::now();
    let mut count = 0;
    for _ in 0..runs {
        count = cms.list(&ListParams::default()).await?.items.len();
    }
    let list_each = list_started.elapsed() / runs;

    println!("| figure | value |");
    println!("|---|---|");
    println!("| start-up (bind + serve) | {:.2} ms |", startup.as_secs_f64() * 1e3);
    println!(
        "| create -> watch event, 200 creates | p50 {:.2} ms, p99 {:.2} ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| list of {count} objects (mean of {runs}) | {:.2} ms |",
        list_each.as_secs_f64() * 1e3
    );
    println!("| RSS after 1,000 objects (client + server) | {:.1} MiB |", rss_mib());
    Ok(())
}
