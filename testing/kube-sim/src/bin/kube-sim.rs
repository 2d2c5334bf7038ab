//! `kube-sim`: run the in-memory Kubernetes API server (test infrastructure) until Ctrl-C.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "In-memory Kubernetes API server for tests and the local demo (not for production)")]
struct Args {
    /// Port on 127.0.0.1 (0 = a free port).
    #[arg(long, default_value_t = 0, env = "KUBE_SIM_PORT")]
    port: u16,
    /// Run Jobs as local processes (the local Job executor).
    #[arg(long, env = "KUBE_SIM_EXECUTOR")]
    executor: bool,
    /// Where to write a kubeconfig for the server.
    #[arg(long, env = "KUBE_SIM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let server = kube_sim::ApiServer::start(kube_sim::ServerOptions {
        port: args.port,
        ..Default::default()
    })
    .await?;
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path)?;
        println!("kubeconfig written to {}", path.display());
    }
    println!("kube-sim listening on {}", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
