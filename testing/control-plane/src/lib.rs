//! A real Kubernetes control plane for the test suites: **test infrastructure, not a product component.**
//!
//! `etcd`, `kube-apiserver` and `kube-controller-manager` are built from their Go modules (`go/go.mod`, pinned to
//! Kubernetes v1.33.4 like the workspace's `k8s-openapi` feature `v1_33`) by `cargo xtask test`, into the directory
//! named by `OPSY_CONTROL_PLANE_BIN`. [`shared`] starts one control plane per test process, on first use:
//!
//! - etcd on a free loopback port with a temporary data dir (`--unsafe-no-fsync`: test data);
//! - kube-apiserver with certificates generated here (a CA, a serving certificate for 127.0.0.1, an admin client
//!   certificate in `system:masters`), a service-account signing key, `--authorization-mode=Node,RBAC`;
//! - kube-controller-manager with the job, garbage-collector, namespace, serviceaccount, serviceaccount-token and
//!   ttl-after-finished controllers.
//!
//! Tests share it and isolate themselves by namespace ([`ControlPlane::namespace`]); each test that runs Pods starts
//! its own [`kube_sim::kubelet::Kubelet`] for its namespace (the Pods then see that test's AWS emulator). The
//! processes die with the test process (`PR_SET_PDEATHSIG`), and a later start removes data dirs left behind.

pub mod cluster;
pub mod process;

use std::{
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use k8s_openapi::{
    api::core::v1::{Namespace, ServiceAccount},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

/// The environment variable naming the directory with the three binaries.
pub const BIN_ENV: &str = "OPSY_CONTROL_PLANE_BIN";

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    url: String,
    admin_kubeconfig: String,
    ca_pem: String,
    dir: PathBuf,
}

/// Why the control plane is not available.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os(BIN_ENV).map(PathBuf::from).with_context(|| {
        format!("{BIN_ENV} is not set: run the tests with `cargo xtask test`, which builds the control plane")
    })?;
    for binary in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        if !dir.join(binary).is_file() {
            bail!(
                "{} is missing: `cargo xtask test` builds it",
                dir.join(binary).display()
            );
        }
    }
    Ok(dir)
}

/// True when the binaries are there (set up by `cargo xtask test`).
pub fn available() -> bool {
    bin_dir().is_ok()
}

/// The control plane of this test process, started on first use. Panics with the reason when it cannot start.
pub fn shared() -> &'static ControlPlane {
    static PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    let started = PLANE.get_or_init(|| {
        // Started from a thread that lives as long as the process: PR_SET_PDEATHSIG fires when the *thread* that
        // forked a child ends, and test threads end after each test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                let _ = tx.send(ControlPlane::start().map_err(|e| format!("{e:#}")));
                loop {
                    std::thread::park();
                }
            })
            .expect("control-plane thread");
        rx.recv()
            .unwrap_or_else(|_| Err("the control-plane thread died".into()))
    });
    match started {
        Ok(plane) => plane,
        Err(error) => panic!("the real control plane did not start: {error}"),
    }
}

impl ControlPlane {
    fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("opsy-control-plane-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let pki = Pki::generate()?;
        pki.write(&dir)?;
        let started = Instant::now();

        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        spawn(
            &dir,
            "etcd",
            Command::new(bin.join("etcd"))
                .arg("--name=default")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=default={peer_url}"))
                .args(["--unsafe-no-fsync", "--log-level=warn"]),
        )?;
        let path = |name: &str| dir.join(name).display().to_string();
        spawn(
            &dir,
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers={etcd_url}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                .arg(format!("--secure-port={api_port}"))
                .arg(format!("--tls-cert-file={}", path("apiserver.crt")))
                .arg(format!("--tls-private-key-file={}", path("apiserver.key")))
                .arg(format!("--client-ca-file={}", path("ca.crt")))
                .arg(format!("--kubelet-client-certificate={}", path("admin.crt")))
                .arg(format!("--kubelet-client-key={}", path("admin.key")))
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!("--service-account-key-file={}", path("sa.pub")))
                .arg(format!("--service-account-signing-key-file={}", path("sa.key")))
                .args([
                    "--authorization-mode=Node,RBAC",
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--enable-priority-and-fairness=false",
                    "--profiling=false",
                    "--v=0",
                ]),
        )?;
        let url = format!("https://127.0.0.1:{api_port}");
        let admin_kubeconfig = kubeconfig(
            &url,
            &pki.ca_pem,
            &json!({"client-certificate-data": b64(&pki.admin_pem), "client-key-data": b64(&pki.admin_key)}),
            "default",
        );
        std::fs::write(dir.join("admin.kubeconfig"), &admin_kubeconfig)?;
        spawn(
            &dir,
            "kube-controller-manager",
            Command::new(bin.join("kube-controller-manager"))
                .arg(format!("--kubeconfig={}", path("admin.kubeconfig")))
                .arg(
                    "--controllers=job-controller,garbage-collector-controller,namespace-controller,\
                     serviceaccount-controller,serviceaccount-token-controller,ttl-after-finished-controller",
                )
                .arg(format!("--service-account-private-key-file={}", path("sa.key")))
                .arg(format!("--root-ca-file={}", path("ca.crt")))
                .args([
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--use-service-account-credentials=false",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                    "--v=0",
                ]),
        )?;
        let plane = Self {
            url,
            admin_kubeconfig,
            ca_pem: pki.ca_pem,
            dir,
        };
        plane.wait_ready(Duration::from_secs(90))?;
        eprintln!(
            "control plane: kube-apiserver at {} ready in {:.1} s (logs in {})",
            plane.url,
            started.elapsed().as_secs_f64(),
            plane.dir.display()
        );
        Ok(plane)
    }

    /// Waits until the API server answers and the `default` ServiceAccount exists (the controller manager runs).
    fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let deadline = Instant::now() + limit;
            let mut last = String::new();
            while Instant::now() < deadline {
                match self.client().await {
                    Ok(client) => {
                        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
                        match accounts.get_opt("default").await {
                            Ok(Some(_)) => return Ok(()),
                            Ok(None) => last = "no default ServiceAccount yet".into(),
                            Err(error) => last = error.to_string(),
                        }
                    }
                    Err(error) => last = format!("{error:#}"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            bail!(
                "the control plane was not ready in {limit:?} ({last}); logs in {}",
                self.dir.display()
            )
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster CA (PEM), to verify the API server.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig (YAML) for a `system:masters` user, current namespace `default`.
    pub fn admin_kubeconfig(&self) -> &str {
        &self.admin_kubeconfig
    }

    /// The admin kubeconfig with `namespace` as the current namespace.
    pub fn admin_kubeconfig_in(&self, namespace: &str) -> String {
        self.admin_kubeconfig
            .replace("namespace: default", &format!("namespace: {namespace}"))
    }

    /// A client with the admin credentials (build it in the runtime that uses it).
    pub async fn client(&self) -> anyhow::Result<Client> {
        client_for(&self.admin_kubeconfig).await
    }

    /// Creates a namespace `<prefix>-<random>` for one test and waits for its `default` ServiceAccount (Pods are
    /// refused until it exists).
    pub async fn namespace(&self, client: &Client, prefix: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        self.create_namespace(client, &name).await?;
        Ok(name)
    }

    /// Creates the namespace `name` (if missing) and waits for its `default` ServiceAccount.
    pub async fn create_namespace(&self, client: &Client, name: &str) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        if namespaces.get_opt(name).await?.is_none() {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            namespaces.create(&PostParams::default(), &ns).await?;
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while accounts.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                bail!("namespace {name} got no default ServiceAccount in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// A kubeconfig (YAML) that authenticates as ServiceAccount `namespace/name` with a bound token (TokenRequest,
    /// one hour), current namespace `namespace`.
    pub async fn service_account_kubeconfig(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600}});
        let response: serde_json::Value = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{name}"))?;
        let token = response["status"]["token"]
            .as_str()
            .context("TokenRequest answered without a token")?;
        Ok(kubeconfig(
            &self.url,
            &self.ca_pem,
            &json!({ "token": token }),
            namespace,
        ))
    }
}

/// Installs CRDs on a real API server by server-side apply (so every test of a process may apply the same CRD)
/// and waits until each is Established.
pub async fn apply_crds(client: &Client, crds: &[CustomResourceDefinition]) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let mut body = serde_json::to_value(crd)?;
        body["apiVersion"] = "apiextensions.k8s.io/v1".into();
        body["kind"] = "CustomResourceDefinition".into();
        api.patch(&name, &PatchParams::apply("opsy-tests").force(), &Patch::Apply(&body))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let established = api
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} not Established in 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// A client for a kubeconfig's current context.
pub async fn client_for(kubeconfig_yaml: &str) -> anyhow::Result<Client> {
    let parsed = Kubeconfig::from_yaml(kubeconfig_yaml)?;
    let config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn kubeconfig(url: &str, ca_pem: &str, user: &serde_json::Value, namespace: &str) -> String {
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": url, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user", "namespace": namespace}}],
        "current-context": "local",
    });
    serde_norway::to_string(&config).unwrap_or_default()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a component with its output in `<dir>/<name>.log`. It runs under util-linux `setpriv --pdeathsig KILL`
/// so that it dies with this process (the workspace forbids the `unsafe` a `pre_exec` prctl would need).
fn spawn(dir: &Path, name: &str, command: &Command) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name} (under setpriv, from util-linux)"))
}

/// Data dirs of earlier test processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("opsy-control-plane-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Keys and certificates of one control plane.
struct Pki {
    ca_pem: String,
    ca_key: String,
    server_pem: String,
    server_key: String,
    admin_pem: String,
    admin_key: String,
    sa_public: String,
    sa_private: String,
}

impl Pki {
    fn generate() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name.push(DnType::CommonName, "opsy-test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "10.0.0.1".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])?;
        server.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_pem = server.signed_by(&server_key, &issuer)?.pem();

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name.push(DnType::CommonName, "opsy-test-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_pem = admin.signed_by(&admin_key, &issuer)?.pem();

        let sa = KeyPair::generate()?;
        Ok(Self {
            ca_pem,
            ca_key: ca_key_pem,
            server_pem,
            server_key: server_key.serialize_pem(),
            admin_pem,
            admin_key: admin_key.serialize_pem(),
            sa_public: sa.public_key_pem(),
            sa_private: sa.serialize_pem(),
        })
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        for (name, content) in [
            ("ca.crt", &self.ca_pem),
            ("ca.key", &self.ca_key),
            ("apiserver.crt", &self.server_pem),
            ("apiserver.key", &self.server_key),
            ("admin.crt", &self.admin_pem),
            ("admin.key", &self.admin_key),
            ("sa.pub", &self.sa_public),
            ("sa.key", &self.sa_private),
        ] {
            let mut file = std::fs::File::create(dir.join(name))?;
            file.write_all(content.as_bytes())?;
        }
        Ok(())
    }
}
