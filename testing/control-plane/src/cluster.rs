//! The one switch of the end-to-end suites: `OPSY_TEST_CLUSTER=real` runs a test against the shared real control
//! plane (a namespace of its own, a local kubelet for that namespace), anything else (the default) against a fresh
//! kube-sim server of its own. Tests write their objects into [`TestCluster::namespace`] and start controllers with
//! [`TestCluster::controller_env`], so the same test body runs against both.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Config,
    api::{PatchParams, PostParams},
};
use kube_sim::{
    ApiServer, RequestRecord, ServerOptions,
    executor::ExecutorOptions,
    kubelet::{Kubelet, KubeletOptions},
};

/// The environment variable that selects the API server of the end-to-end suites.
pub const CLUSTER_ENV: &str = "OPSY_TEST_CLUSTER";

/// Which API server a test talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// kube-sim, one per test (the fast default).
    Sim,
    /// The real control plane, shared by the test process, one namespace per test.
    Real,
}

impl Flavour {
    /// From [`CLUSTER_ENV`].
    pub fn from_env() -> Self {
        match std::env::var(CLUSTER_ENV).as_deref() {
            Ok("real") => Self::Real,
            _ => Self::Sim,
        }
    }
}

/// What a test needs from its cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Run Pods (kube-sim's Job executor, or a local kubelet next to the real Job controller), with this set-up.
    pub pods: Option<ExecutorOptions>,
}

/// A test's API server.
#[derive(Debug)]
pub struct TestCluster {
    flavour: Flavour,
    sim: Option<ApiServer>,
    namespace: String,
    kubeconfig: String,
    pods: Option<ExecutorOptions>,
    kubelets: Vec<Kubelet>,
}

impl TestCluster {
    /// Starts kube-sim or takes a namespace on the real control plane, as [`CLUSTER_ENV`] says.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        match Flavour::from_env() {
            Flavour::Sim => {
                let server = ApiServer::start(ServerOptions {
                    executor: options.pods.clone(),
                    ..ServerOptions::default()
                })
                .await?;
                Ok(Self {
                    flavour: Flavour::Sim,
                    kubeconfig: server.kubeconfig_yaml(),
                    sim: Some(server),
                    namespace: "default".to_owned(),
                    pods: options.pods,
                    kubelets: Vec::new(),
                })
            }
            Flavour::Real => {
                let plane = crate::shared();
                let admin = plane.client().await?;
                let namespace = plane.namespace(&admin, "e2e").await?;
                let mut cluster = Self {
                    flavour: Flavour::Real,
                    sim: None,
                    kubeconfig: plane.admin_kubeconfig_in(&namespace),
                    namespace: namespace.clone(),
                    pods: options.pods,
                    kubelets: Vec::new(),
                };
                cluster.run_pods_in(&admin, &namespace).await?;
                Ok(cluster)
            }
        }
    }

    /// Runs the Pods of one more namespace (on the real server a kubelet per namespace; kube-sim's executor runs
    /// every namespace already). Does nothing when the cluster was started without `pods`.
    pub async fn run_pods_in(&mut self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        if let (Flavour::Real, Some(executor)) = (self.flavour, &self.pods) {
            let mut options = KubeletOptions::for_namespace(namespace);
            options.executor = executor.clone();
            self.kubelets.push(Kubelet::start(client.clone(), options).await?);
        }
        Ok(())
    }

    /// Which server this is.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// The namespace this test owns: `default` on kube-sim, a fresh one on the real server. Clients from
    /// [`Self::client`] default to it.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A namespace name for this test derived from `name` (`name` itself on kube-sim; `<test ns>-<name>` on the
    /// shared real server, so parallel tests do not meet).
    pub fn scoped(&self, name: &str) -> String {
        match self.flavour {
            Flavour::Sim => name.to_owned(),
            Flavour::Real => format!("{}-{name}", self.namespace),
        }
    }

    /// An admin client whose default namespace is [`Self::namespace`].
    pub async fn client(&self) -> anyhow::Result<Client> {
        match &self.sim {
            Some(server) => Ok(Client::try_from(Config::new(server.url().parse()?))?),
            None => crate::client_for(&self.kubeconfig).await,
        }
    }

    /// Writes the admin kubeconfig (current namespace [`Self::namespace`]) for a controller process.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.kubeconfig)
    }

    /// Environment every controller of this test gets: on the real server it watches only this test's namespaces
    /// (`extra` included) and keeps its Lease in this test's namespace, so parallel tests do not meet.
    pub fn controller_env(&self, extra_namespaces: &[&str]) -> Vec<(String, String)> {
        match self.flavour {
            Flavour::Sim => Vec::new(),
            Flavour::Real => {
                let mut watched = vec![self.namespace.clone()];
                watched.extend(extra_namespaces.iter().map(|n| (*n).to_owned()));
                vec![
                    ("WATCH_NAMESPACE".to_owned(), watched.join(",")),
                    ("POD_NAMESPACE".to_owned(), self.namespace.clone()),
                ]
            }
        }
    }

    /// Creates a namespace (waiting for its `default` ServiceAccount on the real server).
    pub async fn create_namespace(&self, client: &Client, name: &str) -> anyhow::Result<()> {
        match self.flavour {
            Flavour::Real => crate::shared().create_namespace(client, name).await,
            Flavour::Sim => {
                let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
                if namespaces.get_opt(name).await?.is_none() {
                    let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
                    namespaces.create(&PostParams::default(), &ns).await?;
                }
                Ok(())
            }
        }
    }

    /// Installs CRDs (server-side apply, so the shared real server takes the same CRD from every test) and waits
    /// until they are Established.
    pub async fn install_crds(&self, client: &Client, crds: &[CustomResourceDefinition]) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        if self.flavour == Flavour::Sim {
            for crd in crds {
                api.create(&PostParams::default(), crd).await?;
            }
            return Ok(());
        }
        crate::apply_crds(client, crds).await
    }

    /// kube-sim's record of every request (`None` on the real server, which keeps no such record).
    pub fn requests(&self) -> Option<Vec<RequestRecord>> {
        self.sim.as_ref().map(ApiServer::requests)
    }

    /// The kube-sim server, when this is kube-sim.
    pub fn sim(&self) -> Option<&ApiServer> {
        self.sim.as_ref()
    }

    /// Real server only: renders `chart` with `helm template opsy --namespace <namespace>` (helm from `HELM` or PATH),
    /// applies its ServiceAccounts, Roles, RoleBindings, ClusterRoles and ClusterRoleBindings (cluster-scoped ones
    /// renamed with this test's namespace, so parallel tests do not meet), and returns a kubeconfig that
    /// authenticates as ServiceAccount `namespace/account` with a bound token. A controller run with it gets
    /// exactly the chart's permissions, judged by the real RBAC authorizer.
    pub async fn chart_service_account_kubeconfig(
        &self,
        client: &Client,
        chart: &Path,
        sets: &[&str],
        namespace: &str,
        account: &str,
    ) -> anyhow::Result<String> {
        use k8s_openapi::api::{
            core::v1::ServiceAccount,
            rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
        };
        anyhow::ensure!(
            self.flavour == Flavour::Real,
            "only the real server authorizes requests"
        );
        let helm = std::env::var_os("HELM").unwrap_or_else(|| "helm".into());
        let mut command = std::process::Command::new(helm);
        command
            .args(["template", "opsy"])
            .arg(chart)
            .args(["--namespace", namespace]);
        for set in sets {
            command.args(["--set", set]);
        }
        let out = command.output()?;
        anyhow::ensure!(
            out.status.success(),
            "helm template: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let suffix = &self.namespace;
        let apply = PatchParams::apply("opsy-tests").force();
        for document in serde_norway::Deserializer::from_str(&text) {
            let Ok(mut doc) = <serde_json::Value as serde::Deserialize>::deserialize(document) else {
                continue;
            };
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or(namespace).to_owned();
            if kind.starts_with("Cluster") {
                let name = format!("{}-{suffix}", doc["metadata"]["name"].as_str().unwrap_or_default());
                doc["metadata"]["name"] = name.into();
            }
            if doc["roleRef"]["kind"] == "ClusterRole" {
                let name = format!("{}-{suffix}", doc["roleRef"]["name"].as_str().unwrap_or_default());
                doc["roleRef"]["name"] = name.into();
            }
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let patch = kube::api::Patch::Apply(&doc);
            match kind.as_str() {
                "ServiceAccount" => {
                    self.create_namespace(client, &ns).await?;
                    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                        .patch(&name, &apply, &patch)
                        .await?;
                }
                "Role" => {
                    self.create_namespace(client, &ns).await?;
                    Api::<Role>::namespaced(client.clone(), &ns)
                        .patch(&name, &apply, &patch)
                        .await?;
                }
                "RoleBinding" => {
                    self.create_namespace(client, &ns).await?;
                    Api::<RoleBinding>::namespaced(client.clone(), &ns)
                        .patch(&name, &apply, &patch)
                        .await?;
                }
                "ClusterRole" => {
                    Api::<ClusterRole>::all(client.clone())
                        .patch(&name, &apply, &patch)
                        .await?;
                }
                "ClusterRoleBinding" => {
                    Api::<ClusterRoleBinding>::all(client.clone())
                        .patch(&name, &apply, &patch)
                        .await?;
                }
                _ => {}
            }
        }
        crate::shared()
            .service_account_kubeconfig(client, namespace, account)
            .await
    }
}

/// The `status` of an object exactly as the API server stores it (JSON, not the typed view, so a test can tell a
/// field that is absent from one the typed view would default): `Null` when the object or its status is missing.
pub async fn stored_status<K>(client: &Client, namespace: &str, name: &str) -> serde_json::Value
where
    K: kube::Resource<DynamicType = ()>,
{
    let resource = kube::api::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    api.get_opt(name)
        .await
        .expect("get")
        .and_then(|o| o.data.get("status").cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Reads `name` every `every` until `done` holds and returns it; after `within`, `Err` with the object as last
/// read (`None`: it never existed). The callers add what explains a timeout (their controller's log, Pods).
pub async fn wait_for_object<K>(
    api: &Api<K>,
    name: &str,
    within: std::time::Duration,
    every: std::time::Duration,
    done: impl Fn(&K) -> bool,
) -> Result<K, Option<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut last = None;
    let wait = async {
        loop {
            if let Some(object) = api.get_opt(name).await.expect("get") {
                if done(&object) {
                    return object;
                }
                last = Some(object);
            }
            tokio::time::sleep(every).await;
        }
    };
    match tokio::time::timeout(within, wait).await {
        Ok(object) => Ok(object),
        Err(_) => Err(last),
    }
}
