//! aws-sim: **test infrastructure, not a product component.** Starts the AWS emulator (moto 5.2.5 in server mode
//! plus this project's extension, `python/opsy_aws_emulator.py`) on a free 127.0.0.1 port and gives tests:
//!
//! - AWS SDK clients that talk HTTP to it, each bound to its own emulated account (moto's `x-moto-account-id`
//!   header), so tests run in parallel without resetting each other; retries are off by default so an
//!   unimplemented call or an injected fault fails fast;
//! - seeding of public AMIs and SSM parameters, fault injection per service/action, the call log, scripted
//!   progress of EKS updates and instance refreshes, and reset.
//!
//! The emulator process is killed when the [`AwsEmulator`] is dropped, and exits by itself when its stdin pipe
//! closes, so it never outlives the test even when the test process is killed.
//!
//! Python comes from `OPSY_AWS_EMULATOR_PYTHON` (set by `cargo xtask test`, which creates the venv with the pinned
//! moto) or `<target>/tools/venv/bin/python`.

pub mod eks;
pub mod filters;
pub mod script;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig};
use aws_sdk_ec2::config::{
    ConfigBag, Credentials, Intercept, RuntimeComponents, interceptors::BeforeTransmitInterceptorContextMut,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A file of this repository, by its path from the repository root: found from the current directory upwards
/// (tests run in their crate's directory, the testbed in the root), else where this crate was compiled. The
/// compile-time path alone is not enough: Cargo does not rebuild a crate when only the checkout's location
/// changed, so a target directory shared by two checkouts would run the other checkout's files.
pub fn repo_path(relative: &str) -> PathBuf {
    if let Ok(dir) = std::env::current_dir() {
        for ancestor in dir.ancestors() {
            let candidate = ancestor.join(relative);
            if ancestor.join("testing/aws-sim/Cargo.toml").is_file() && candidate.exists() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

/// The emulator's own script.
pub fn script() -> PathBuf {
    repo_path("testing/aws-sim/python/opsy_aws_emulator.py")
}

/// Why the emulator could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// No Python with moto was found.
    #[error("no emulator Python at {0}; run the tests with `cargo xtask test`, which installs moto")]
    NoPython(PathBuf),
    /// The process could not be started or did not report readiness.
    #[error("the AWS emulator did not start: {0}")]
    Start(String),
    /// A control call failed.
    #[error("AWS emulator control call {path} failed: {message}")]
    Control {
        /// Control path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// One node group update (`kind` `eks`) or instance refresh (`asg`) as the emulator ran it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Span {
    /// `eks` or `asg`.
    pub kind: String,
    /// Node group or Auto Scaling group name.
    pub name: String,
    /// Update or instance refresh ID.
    pub id: String,
    /// Start (seconds since the epoch).
    pub start: f64,
    /// End, if it ended.
    pub end: Option<f64>,
}

/// The most spans that ran at the same moment.
pub fn max_concurrent(spans: &[Span]) -> usize {
    let mut edges: Vec<(f64, i32)> = spans
        .iter()
        .flat_map(|s| [(s.start, 1), (s.end.unwrap_or(f64::INFINITY), -1)])
        .collect();
    // At equal times an end comes before a start: back to back is not at once.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// An emulated AWS account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Account(pub String);

impl Account {
    /// A fresh random twelve-digit account ID.
    pub fn random() -> Self {
        let digits: String = uuid::Uuid::new_v4()
            .as_u128()
            .to_string()
            .chars()
            .rev()
            .take(12)
            .collect();
        Self(format!("{digits:0>12}"))
    }
}

/// One AMI to seed.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedImage {
    /// AMI name.
    pub name: String,
    /// Owner account (e.g. `602401143452` for EKS-optimized AMIs).
    pub owner_id: String,
    /// RFC 3339 creation date.
    pub creation_date: String,
    /// Tags.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Public (launchable by everyone).
    pub public: bool,
    /// `available` unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A fault rule: the next `count` calls of `service`/`action` fail with `status` and `code` after `delay_ms`.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    /// Signing name of the service (`ec2`, `eks`, `autoscaling`, `ssm`).
    pub service: String,
    /// API action, e.g. `DescribeImages`.
    pub action: String,
    /// HTTP status.
    pub status: u16,
    /// AWS error code, e.g. `RequestLimitExceeded`; `None` only delays.
    pub code: Option<String>,
    /// Calls affected.
    pub count: u32,
    /// Delay before answering.
    pub delay_ms: u64,
    /// Only calls from this account (all accounts when `None`).
    pub account: Option<String>,
    /// The error message (a generic one when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Fault {
    /// A throttling fault (`RequestLimitExceeded`-style) for `count` calls.
    pub fn error(service: &str, action: &str, status: u16, code: &str, count: u32) -> Self {
        Self {
            service: service.into(),
            action: action.into(),
            status,
            code: Some(code.into()),
            count,
            delay_ms: 0,
            account: None,
            message: None,
        }
    }
}

/// One call the emulator served.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Call {
    /// Account header of the call.
    pub account: String,
    /// Signing name of the service.
    pub service: String,
    /// Region of the call.
    pub region: String,
    /// API action.
    pub action: String,
    /// Query-protocol parameters (EC2, Auto Scaling), e.g. `Filter.1.Name`; empty for other protocols.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Request path (REST protocols name resources in it, e.g. `/clusters/c/node-groups/ng-a/update-version`).
    #[serde(default)]
    pub path: String,
}

impl Call {
    /// Whether any parameter has this value (e.g. a filter value).
    pub fn has_param_value(&self, value: &str) -> bool {
        self.params.values().any(|v| v == value)
    }

    /// Whether the request path names this resource as a whole segment (e.g. a node group).
    pub fn names_in_path(&self, segment: &str) -> bool {
        self.path.split('/').any(|s| s == segment)
    }
}

/// Sends `x-moto-account-id` on every request of a client.
#[derive(Debug)]
struct AccountHeader(String);

impl Intercept for AccountHeader {
    fn name(&self) -> &'static str {
        "MotoAccountHeader"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-moto-account-id", self.0.clone());
        Ok(())
    }
}

/// A running emulator.
#[derive(Debug)]
pub struct AwsEmulator {
    endpoint: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
    _lifeline: Option<tokio::process::ChildStdin>,
}

impl AwsEmulator {
    /// Starts the emulator and waits until it serves.
    pub async fn start() -> Result<Self, EmulatorError> {
        let python = python_path();
        if !python.is_file() {
            return Err(EmulatorError::NoPython(python));
        }
        let mut child = tokio::process::Command::new(&python)
            .arg(script())
            .args(["--port", "0", "--quiet", "--exit-with-stdin"])
            // The emulator exits when this pipe closes: even if the test process is killed outright, it
            // never outlives it.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| EmulatorError::Start(e.to_string()))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| EmulatorError::Start("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .map_err(|_| EmulatorError::Start("no READY line within 60 s".into()))?
            .map_err(|e| EmulatorError::Start(e.to_string()))?
            .ok_or_else(|| EmulatorError::Start("the process exited before it was ready".into()))?;
        let port = ready
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| EmulatorError::Start(format!("unexpected first line {ready:?}")))?;
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _child: child,
            _lifeline: stdin,
        })
    }

    /// `http://127.0.0.1:<port>`: the value for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// [`Self::child_env`] for a process that works in `account` (signs with the access key `opsy<account>`, which
    /// the emulator maps to that account).
    pub fn child_env_in(&self, region: &str, account: &Account) -> Vec<(String, String)> {
        let mut env = self.child_env(region);
        for (key, value) in &mut env {
            if key == "AWS_ACCESS_KEY_ID" {
                *value = format!("opsy{}", account.0);
            }
        }
        env
    }

    /// Environment for a child process (Packer, a controller binary) so its AWS calls reach the emulator in the
    /// default account.
    pub fn child_env(&self, region: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), region.into()),
            ("AWS_DEFAULT_REGION".into(), region.into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// Environment for processes run as Packer build Jobs: [`Self::child_env`] plus the `packer` shim
    /// (`packer-shim/`, which lets Debian's Packer 1.6 run current projects) first on `PATH`, in front of
    /// `OPSY_PACKER` (set by `cargo xtask`) or `/usr/bin/packer`.
    pub fn packer_job_env(&self, region: &str) -> std::collections::BTreeMap<String, String> {
        let shim = repo_path("testing/aws-sim/packer-shim");
        let shim = shim.display();
        let mut env: std::collections::BTreeMap<String, String> = self.child_env(region).into_iter().collect();
        // The Packer `cargo xtask` installed or found (it exports OPSY_PACKER), whatever else is on PATH.
        if let Some(packer) = std::env::var_os("OPSY_PACKER") {
            env.insert("PACKER_REAL".into(), packer.to_string_lossy().into_owned());
        }
        env.insert(
            "PATH".into(),
            format!("{shim}:{}", std::env::var("PATH").unwrap_or_default()),
        );
        env
    }

    /// SDK configuration for the emulator in `region`, retries off.
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        self.sdk_config_with_retries(region, RetryConfig::disabled()).await
    }

    /// SDK configuration with an explicit retry policy.
    pub async fn sdk_config_with_retries(&self, region: &str, retry: RetryConfig) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "aws-sim"))
            .retry_config(retry)
            .load()
            .await
    }

    /// An EC2 client bound to `account`.
    pub fn ec2(&self, sdk: &SdkConfig, account: &Account) -> aws_sdk_ec2::Client {
        let conf = aws_sdk_ec2::config::Builder::from(sdk)
            .interceptor(AccountHeader(account.0.clone()))
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }

    /// An EKS client bound to `account`.
    pub fn eks(&self, sdk: &SdkConfig, account: &Account) -> aws_sdk_eks::Client {
        let conf = aws_sdk_eks::config::Builder::from(sdk)
            .interceptor(AccountHeader(account.0.clone()))
            .build();
        aws_sdk_eks::Client::from_conf(conf)
    }

    /// An Auto Scaling client bound to `account`.
    pub fn autoscaling(&self, sdk: &SdkConfig, account: &Account) -> aws_sdk_autoscaling::Client {
        let conf = aws_sdk_autoscaling::config::Builder::from(sdk)
            .interceptor(AccountHeader(account.0.clone()))
            .build();
        aws_sdk_autoscaling::Client::from_conf(conf)
    }

    /// An SSM client bound to `account`.
    pub fn ssm(&self, sdk: &SdkConfig, account: &Account) -> aws_sdk_ssm::Client {
        let conf = aws_sdk_ssm::config::Builder::from(sdk)
            .interceptor(AccountHeader(account.0.clone()))
            .build();
        aws_sdk_ssm::Client::from_conf(conf)
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, EmulatorError> {
        let error = |message: String| EmulatorError::Control {
            path: path.to_owned(),
            message,
        };
        let mut request = self.http.request(method, format!("{}{path}", self.endpoint));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| error(e.to_string()))?;
        let status = response.status();
        let value: Value = response.json().await.map_err(|e| error(e.to_string()))?;
        if !status.is_success() {
            return Err(error(format!("{status}: {value}")));
        }
        Ok(value)
    }

    /// Seeds AMIs into an account and region; returns their IDs.
    pub async fn seed_images(
        &self,
        account: &Account,
        region: &str,
        images: &[SeedImage],
    ) -> Result<Vec<String>, EmulatorError> {
        let out = self
            .control(
                reqwest::Method::POST,
                "/_ext/seed/images",
                Some(json!({"account": account.0, "region": region, "images": images})),
            )
            .await?;
        Ok(serde_json::from_value(out["imageIds"].clone()).unwrap_or_default())
    }

    /// Seeds one image; returns its ID.
    pub async fn seed_image(&self, account: &Account, region: &str, image: SeedImage) -> Result<String, EmulatorError> {
        self.seed_images(account, region, std::slice::from_ref(&image))
            .await?
            .pop()
            .ok_or_else(|| EmulatorError::Control {
                path: "/_ext/seed/images".into(),
                message: "no image ID in the answer".into(),
            })
    }

    /// Seeds SSM parameters (including `/aws/service/...` names, which callers cannot create).
    pub async fn seed_ssm(
        &self,
        account: &Account,
        region: &str,
        parameters: &[(&str, &str)],
    ) -> Result<(), EmulatorError> {
        let parameters: Vec<Value> = parameters.iter().map(|(n, v)| json!({"name": n, "value": v})).collect();
        self.control(
            reqwest::Method::POST,
            "/_ext/seed/ssm",
            Some(json!({"account": account.0, "region": region, "parameters": parameters})),
        )
        .await
        .map(|_| ())
    }

    /// An SNS client bound to `account`.
    pub fn sns(&self, sdk: &SdkConfig, account: &Account) -> aws_sdk_sns::Client {
        let conf = aws_sdk_sns::config::Builder::from(sdk)
            .interceptor(AccountHeader(account.0.clone()))
            .build();
        aws_sdk_sns::Client::from_conf(conf)
    }

    /// An SES v2 client bound to `account`.
    pub fn sesv2(&self, sdk: &SdkConfig, account: &Account) -> aws_sdk_sesv2::Client {
        let conf = aws_sdk_sesv2::config::Builder::from(sdk)
            .interceptor(AccountHeader(account.0.clone()))
            .build();
        aws_sdk_sesv2::Client::from_conf(conf)
    }

    /// Messages published to SNS and e-mails sent with SES in an account and region, as moto stored them:
    /// `{"sns": [{"topicArn", "subject", "message"}], "ses": [{"source", "subject", "body", "destinations"}]}`.
    pub async fn sent(&self, account: &Account, region: &str) -> Result<Value, EmulatorError> {
        self.control(
            reqwest::Method::GET,
            &format!("/_ext/sent?account={}&region={region}", account.0),
            None,
        )
        .await
    }

    /// Adds a fault rule.
    pub async fn inject(&self, fault: &Fault) -> Result<(), EmulatorError> {
        self.control(
            reqwest::Method::POST,
            "/_ext/faults",
            Some(serde_json::to_value(fault).unwrap_or_default()),
        )
        .await
        .map(|_| ())
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) -> Result<(), EmulatorError> {
        self.control(reqwest::Method::DELETE, "/_ext/faults", None)
            .await
            .map(|_| ())
    }

    /// Calls served so far for an account, in order.
    pub async fn calls(&self, account: &Account) -> Result<Vec<Call>, EmulatorError> {
        let out = self
            .control(
                reqwest::Method::GET,
                &format!("/_ext/calls?account={}", account.0),
                None,
            )
            .await?;
        serde_json::from_value(out).map_err(|e| EmulatorError::Control {
            path: "/_ext/calls".into(),
            message: e.to_string(),
        })
    }

    /// How many times an account called `action`.
    pub async fn count(&self, account: &Account, action: &str) -> Result<usize, EmulatorError> {
        Ok(self.calls(account).await?.iter().filter(|c| c.action == action).count())
    }

    /// `auto`: each update and refresh ends `duration` after it started (time passes; reads change nothing);
    /// `manual`: only [`Self::finish_update`] and [`Self::finish_refresh`] end them.
    pub async fn set_progress(&self, manual: bool, duration: std::time::Duration) -> Result<(), EmulatorError> {
        let mode = if manual { "manual" } else { "auto" };
        self.control(
            reqwest::Method::POST,
            "/_ext/progress",
            Some(json!({"mode": mode, "durationSeconds": duration.as_secs_f64()})),
        )
        .await
        .map(|_| ())
    }

    /// How long a CopyImage copy stays `pending` before it is `available` (default 2 s).
    pub async fn set_copy_duration(&self, duration: std::time::Duration) -> Result<(), EmulatorError> {
        self.control(
            reqwest::Method::POST,
            "/_ext/copy",
            Some(json!({"durationSeconds": duration.as_secs_f64()})),
        )
        .await
        .map(|_| ())
    }

    /// Makes the next `count` CopyImage copies end in state `failed` (after the copy duration) instead of `available`.
    pub async fn fail_next_copies(&self, count: u32) -> Result<(), EmulatorError> {
        self.control(reqwest::Method::POST, "/_ext/copy", Some(json!({"failNext": count})))
            .await
            .map(|_| ())
    }

    /// Every node group update and instance refresh so far, with when it started and ended.
    pub async fn timeline(&self) -> Result<Vec<Span>, EmulatorError> {
        let body = self.control(reqwest::Method::GET, "/_ext/timeline", None).await?;
        serde_json::from_value(body["timeline"].clone()).map_err(|e| EmulatorError::Control {
            path: "/_ext/timeline".into(),
            message: e.to_string(),
        })
    }

    /// Turns the emulator's per-resource EC2 tag lookup on (the default) or off (moto's own, which scans every
    /// tag in the region): the answers are the same, only the cost differs.
    pub async fn set_fast_tags(&self, on: bool) -> Result<(), EmulatorError> {
        self.control(reqwest::Method::POST, "/_ext/fast-tags", Some(json!({"on": on})))
            .await
            .map(|_| ())
    }

    /// Finishes the running update of a node group with `status` (`Successful`, `Failed`, `Cancelled`), or scripts
    /// the outcome of its next update when none runs.
    pub async fn finish_update(
        &self,
        account: &Account,
        region: &str,
        cluster: &str,
        nodegroup: &str,
        status: &str,
    ) -> Result<(), EmulatorError> {
        let body = json!({"account": account.0, "region": region, "cluster": cluster, "nodegroup": nodegroup, "status": status});
        self.control(reqwest::Method::POST, "/_ext/eks/outcome", Some(body))
            .await
            .map(|_| ())
    }

    /// Finishes the running instance refresh of an Auto Scaling group, or scripts its next one.
    pub async fn finish_refresh(
        &self,
        account: &Account,
        region: &str,
        asg: &str,
        status: &str,
    ) -> Result<(), EmulatorError> {
        let body = json!({"account": account.0, "region": region, "asg": asg, "status": status});
        self.control(reqwest::Method::POST, "/_ext/autoscaling/outcome", Some(body))
            .await
            .map(|_| ())
    }

    /// Clears every account, the call log, faults and scripted outcomes (`/moto-api/reset`).
    pub async fn reset(&self) -> Result<(), EmulatorError> {
        let response = self
            .http
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await
            .map_err(|e| EmulatorError::Control {
                path: "/moto-api/reset".into(),
                message: e.to_string(),
            })?;
        if !response.status().is_success() {
            return Err(EmulatorError::Control {
                path: "/moto-api/reset".into(),
                message: response.status().to_string(),
            });
        }
        Ok(())
    }
}

/// The Python interpreter of the emulator's venv.
pub fn python_path() -> PathBuf {
    if let Some(p) = std::env::var_os("OPSY_AWS_EMULATOR_PYTHON") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("tools/venv/bin/python")
}

/// The sample Packer project of this repository (`examples/packer/eks-node`).
pub fn sample_packer_project() -> PathBuf {
    repo_path("examples/packer/eks-node")
}

/// Makes `repo` a git repository (branch `main`, one commit) holding the sample Packer project at `project_dir`,
/// for tests that clone it the way git-sync does.
pub fn sample_packer_repo(repo: &std::path::Path, project_dir: &str) -> std::io::Result<()> {
    let project = repo.join(project_dir);
    std::fs::create_dir_all(&project)?;
    for entry in std::fs::read_dir(sample_packer_project())? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), project.join(entry.file_name()))?;
        }
    }
    for args in [
        &["init", "--quiet"][..],
        &["add", "."],
        &["commit", "--quiet", "-m", "sample"],
    ] {
        let status = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(repo)
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("git {args:?} failed")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod span_tests {
    use super::*;

    fn span(start: f64, end: Option<f64>) -> Span {
        Span {
            kind: "eks".into(),
            name: "ng".into(),
            id: "u".into(),
            start,
            end,
        }
    }

    #[test]
    fn concurrency_counts_overlaps_not_back_to_back_spans() {
        assert_eq!(max_concurrent(&[]), 0);
        assert_eq!(max_concurrent(&[span(0.0, Some(1.0)), span(1.0, Some(2.0))]), 1);
        assert_eq!(max_concurrent(&[span(0.0, Some(2.0)), span(1.0, Some(3.0))]), 2);
        assert_eq!(
            max_concurrent(&[span(0.0, None), span(5.0, Some(6.0)), span(5.5, Some(7.0))]),
            3,
            "an open span runs on"
        );
    }
}
