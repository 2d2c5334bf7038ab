//! Small AWS pieces both controllers share: one typed [`AwsError`] with the classification of AWS error codes in
//! one place (throttled, not found, denied, invalid, transient), the error text of an SDK error (code and message,
//! never a request body or credentials), and the conversion of an EC2 image into the tag scheme's
//! [`ami_tags::Image`].
//!
//! What this module must never do: decide what a controller does about an error. It only says what kind of error
//! it is; the controllers' decisions read [`AwsErrorKind`].

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// The error of any SDK call (every AWS SDK crate uses this one type with its operation's error `E`).
pub type SdkFailure<E> = SdkError<E, HttpResponse>;

/// What kind of failure an AWS error is. The classification lives in [`classify`] and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AwsErrorKind {
    /// The account's request rate was exceeded (after the SDK's own retries): retry later with back-off.
    Throttled,
    /// The service or the connection failed (5xx, timeout, dispatch failure): retry later with back-off.
    Transient,
    /// The resource is busy with another change (e.g. an EKS update in progress): retry later.
    Conflict,
    /// The named resource does not exist.
    NotFound,
    /// Credentials or permissions are missing: only the user can fix it.
    Denied,
    /// AWS refused the request itself (a bad parameter, an unsupported operation): retrying the same call
    /// cannot help.
    Invalid,
    /// Anything else (a code this module does not know).
    Other,
}

impl AwsErrorKind {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retriable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient | Self::Conflict)
    }

    /// Short CamelCase category: Event reason and metric label.
    pub fn category(self) -> &'static str {
        match self {
            Self::Throttled => "AWSThrottled",
            Self::Transient => "AWSUnavailable",
            Self::Conflict => "AWSConflict",
            Self::NotFound => "AWSNotFound",
            Self::Denied => "AWSAccessDenied",
            Self::Invalid => "AWSInvalidRequest",
            Self::Other => "AWSError",
        }
    }
}

/// One failed AWS call: the operation, the code AWS sent (if any), a message fit for logs, status and Events
/// (never a request body or credentials), and its [`AwsErrorKind`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("AWS {operation} failed: {message}")]
pub struct AwsError {
    /// The AWS operation, e.g. `CreateTags`.
    pub operation: &'static str,
    /// The AWS error code, when the service sent one.
    pub code: Option<String>,
    /// `Code: message` as the service sent it, or the SDK's description of a transport failure.
    pub message: String,
    /// What kind of failure this is.
    pub kind: AwsErrorKind,
}

impl AwsError {
    /// From an SDK error of any service: transport failures and timeouts are [`AwsErrorKind::Transient`]; a service
    /// error is classified by its code and HTTP status.
    pub fn from_sdk<E>(operation: &'static str, error: &SdkFailure<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let code = error.code().map(str::to_owned);
        let kind = match error {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                AwsErrorKind::Transient
            }
            _ => classify(code.as_deref(), status),
        };
        let message = match (error.code(), error.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => DisplayErrorContext(error).to_string(),
        };
        Self {
            operation,
            code,
            message,
            kind,
        }
    }

    /// An answer that lacks what the API reference promises (e.g. no update ID): treated as transient, since the
    /// same call is expected to answer properly next time.
    pub fn malformed(operation: &'static str, what: &str) -> Self {
        Self {
            operation,
            code: None,
            message: format!("the response has no {what}"),
            kind: AwsErrorKind::Transient,
        }
    }

    /// A service's answer `code` with HTTP `status` and `message`, classified by [`classify`] (what
    /// [`AwsError::from_sdk`] makes of such an answer).
    pub fn from_code(operation: &'static str, code: &str, status: u16, message: &str) -> Self {
        Self {
            operation,
            code: Some(code.to_owned()),
            message: format!("{code}: {message}"),
            kind: classify(Some(code), Some(status)),
        }
    }

    /// Short CamelCase category: Event reason and metric label.
    pub fn category(&self) -> &'static str {
        self.kind.category()
    }

    /// Whether the code is one of `codes` (exact match).
    pub fn has_code(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }
}

/// Classifies an AWS error by its code (EC2, EKS, Auto Scaling, SSM, SNS, SES spellings) and, when the code says
/// nothing, by its HTTP status.
pub fn classify(code: Option<&str>, status: Option<u16>) -> AwsErrorKind {
    use AwsErrorKind::*;
    if let Some(code) = code {
        let known = match code {
            "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
            | "BandwidthLimitExceeded" => Some(Throttled),
            "InternalError"
            | "InternalFailure"
            | "InternalServerError"
            | "InternalServiceError"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "Unavailable"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "ServerException"
            | "ServiceFailure"
            | "RequestExpired" => Some(Transient),
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "UnauthorizedException"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "AuthFailure"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "SignatureDoesNotMatch"
            | "OptInRequired"
            | "Blocked"
            | "MissingAuthenticationToken" => Some(Denied),
            "ResourceNotFoundException" | "ParameterNotFound" | "NotFoundException" | "NotFound" => Some(NotFound),
            "InvalidParameterException"
            | "InvalidParameterValue"
            | "InvalidParameter"
            | "InvalidParameterCombination"
            | "InvalidParameterValueException"
            | "ValidationError"
            | "ValidationException"
            | "InvalidRequestException"
            | "InvalidRequest"
            | "UnsupportedOperation"
            | "MissingParameter"
            | "InvalidAction"
            | "InvalidKeyId" => Some(Invalid),
            "ResourceInUseException"
            | "ResourceInUse"
            | "ResourceContention"
            | "ConcurrentModification"
            | "IncorrectState"
            | "InstanceRefreshInProgress"
            | "ConflictException" => Some(Conflict),
            _ => None,
        };
        if let Some(kind) = known {
            return kind;
        }
        // EC2 spells "does not exist" as `<Thing>.NotFound` and bad IDs as `<Thing>.Malformed`.
        if code.ends_with(".NotFound") || code.ends_with("NotFound") {
            return NotFound;
        }
        if code.ends_with(".Malformed") || code.starts_with("InvalidParameter") {
            return Invalid;
        }
    }
    match status {
        Some(429) => Throttled,
        Some(401 | 403) => Denied,
        Some(404) => NotFound,
        Some(500..) => Transient,
        _ => Other,
    }
}

/// `Code: message` of an SDK error, or its display text when the service sent no code.
pub fn error_text<E: ProvideErrorMetadata + std::fmt::Display>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}

/// Every AWS call's time limits, set in one place for both controllers: one attempt may take 20 s, a call with its
/// retries 60 s. Without them a call on a dead connection would hold a reconcile (and its worker) forever.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(20))
        .operation_timeout(std::time::Duration::from_secs(60))
        .build()
}

/// The SDK configuration of both controllers: the standard chain (which honours `AWS_ENDPOINT_URL`), the
/// [`timeouts`], and `max_attempts` per call in the SDK's standard retry mode when given.
pub async fn sdk_config(max_attempts: Option<u32>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts());
    if let Some(attempts) = max_attempts {
        loader = loader.retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(attempts.max(1)));
    }
    loader.load().await
}

/// EC2 filters: the spec's `amiFilters` (name and values) and then `tag:<key>=<value>` pairs.
pub fn ec2_filters(filters: &[api_types::AmiFilter], tags: &[(String, String)]) -> Vec<aws_sdk_ec2::types::Filter> {
    use aws_sdk_ec2::types::Filter;
    filters
        .iter()
        .map(|f| {
            Filter::builder()
                .name(&f.name)
                .set_values(Some(f.values.clone()))
                .build()
        })
        .chain(
            tags.iter()
                .map(|(name, value)| Filter::builder().name(name).values(value).build()),
        )
        .collect()
}

/// The one image adapter of both controllers: DescribeImages with `filters`, `owners` and `ids` (each left out
/// when empty), every page, each image as the tag scheme sees it.
pub async fn describe_images(
    client: &aws_sdk_ec2::Client,
    filters: Vec<aws_sdk_ec2::types::Filter>,
    owners: &[String],
    ids: &[String],
) -> Result<Vec<ami_tags::Image>, AwsError> {
    let mut pages = client
        .describe_images()
        .set_filters(Some(filters).filter(|f| !f.is_empty()))
        .set_owners(Some(owners.to_vec()).filter(|o| !o.is_empty()))
        .set_image_ids(Some(ids.to_vec()).filter(|i| !i.is_empty()))
        .into_paginator()
        .send();
    let mut images = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("DescribeImages", &e))?;
        images.extend(page.images().iter().map(to_image));
    }
    Ok(images)
}

/// Whether a DescribeImages by ID failed because of the ID: EC2 does not know it (`InvalidAMIID.NotFound`), it is
/// malformed or no longer available. The caller treats the AMI as absent.
pub fn is_unknown_image(error: &AwsError) -> bool {
    error.kind == AwsErrorKind::NotFound || error.code.as_deref().is_some_and(|c| c.starts_with("InvalidAMIID"))
}

/// An EC2 image as the tag scheme sees it.
pub fn to_image(i: &aws_sdk_ec2::types::Image) -> ami_tags::Image {
    ami_tags::Image {
        id: i.image_id().unwrap_or_default().to_owned(),
        name: i.name().map(str::to_owned),
        description: i.description().map(str::to_owned),
        creation_date: i.creation_date().and_then(|d| d.parse().ok()),
        state: i.state().map(|s| s.as_str().to_owned()),
        architecture: i.architecture().map(|a| a.as_str().to_owned()),
        deprecation_time: i.deprecation_time().and_then(|d| d.parse().ok()),
        snapshot_ids: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
            .collect(),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect(),
    }
}

/// Something that launches instances from a launch template: an Auto Scaling group or an EKS managed node group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateUser {
    /// The launch template ID, when the user names it by ID.
    pub template_id: Option<String>,
    /// The launch template name, when the user names it by name.
    pub template_name: Option<String>,
    /// The version it names: a number, `$Latest` or `$Default` (the default when it names none).
    pub version: String,
    /// Who: `Auto Scaling group <name>` or `EKS node group <cluster>/<name>`.
    pub user: String,
    /// The Auto Scaling group's name (for an Auto Scaling group).
    pub asg: Option<String>,
}

/// The launch template of an Auto Scaling group: its own, or that of its mixed-instances policy.
pub fn asg_template(
    g: &aws_sdk_autoscaling::types::AutoScalingGroup,
) -> Option<&aws_sdk_autoscaling::types::LaunchTemplateSpecification> {
    g.launch_template().or_else(|| {
        g.mixed_instances_policy()
            .and_then(|m| m.launch_template())
            .and_then(|t| t.launch_template_specification())
    })
}

/// Every Auto Scaling group of a region that launches from a launch template, with the template and version it names
/// (every page). One listing shared by the rollout's `$Latest` and clean-up checks and by retention.
pub async fn asg_template_users(client: &aws_sdk_autoscaling::Client) -> Result<Vec<TemplateUser>, AwsError> {
    let mut pages = client.describe_auto_scaling_groups().into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("DescribeAutoScalingGroups", &e))?;
        for g in page.auto_scaling_groups() {
            if let (Some(lt), Some(name)) = (asg_template(g), g.auto_scaling_group_name()) {
                out.push(TemplateUser {
                    template_id: lt.launch_template_id().map(str::to_owned),
                    template_name: lt.launch_template_name().map(str::to_owned),
                    version: lt.version().unwrap_or("$Default").to_owned(),
                    user: format!("Auto Scaling group {name}"),
                    asg: Some(name.to_owned()),
                });
            }
        }
    }
    Ok(out)
}

/// Every EKS managed node group of every cluster in a region that launches from a launch template. A node group
/// deleted between the listing and its description is skipped.
pub async fn nodegroup_template_users(client: &aws_sdk_eks::Client) -> Result<Vec<TemplateUser>, AwsError> {
    let mut clusters = Vec::new();
    let mut pages = client.list_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("ListClusters", &e))?;
        clusters.extend(page.clusters().iter().cloned());
    }
    let mut out = Vec::new();
    for cluster in clusters {
        let mut names = Vec::new();
        let mut pages = client.list_nodegroups().cluster_name(&cluster).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListNodegroups", &e))?;
            names.extend(page.nodegroups().iter().cloned());
        }
        for name in names {
            let described = match client
                .describe_nodegroup()
                .cluster_name(&cluster)
                .nodegroup_name(&name)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => match AwsError::from_sdk("DescribeNodegroup", &e) {
                    e if e.kind == AwsErrorKind::NotFound => continue,
                    e => return Err(e),
                },
            };
            if let Some(lt) = described.nodegroup().and_then(|n| n.launch_template()) {
                out.push(TemplateUser {
                    template_id: lt.id().map(str::to_owned),
                    template_name: lt.name().map(str::to_owned),
                    version: lt.version().unwrap_or("$Default").to_owned(),
                    user: format!("EKS node group {cluster}/{name}"),
                    asg: None,
                });
            }
        }
    }
    Ok(out)
}

/// Counts every AWS call by service, operation and outcome (`ok`, `throttled`, `client_error`, `server_error`,
/// `transport_error`) into `aws_calls_total`. Added to each SDK client's config as an interceptor; retries are
/// counted as the one call the caller made.
#[derive(Clone, Debug)]
pub struct CallCounter(pub std::sync::Arc<crate::Metrics>);

impl aws_sdk_ec2::config::Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "OpsyCallCounter"
    }

    fn read_after_execution(
        &self,
        context: &aws_sdk_ec2::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_ec2::config::RuntimeComponents,
        cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        let (service, operation) = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        let outcome = match (
            context.output_or_error(),
            context.response().map(|r| r.status().as_u16()),
        ) {
            (Some(Ok(_)), _) => "ok",
            (_, Some(429)) => "throttled",
            (_, Some(400..=499)) => "client_error",
            (_, Some(500..)) => "server_error",
            _ => "transport_error",
        };
        self.0.aws_call(&service.to_ascii_lowercase(), operation, outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_of_every_service_are_throttled() {
        for code in [
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TooManyRequestsException",
        ] {
            assert_eq!(classify(Some(code), Some(400)), AwsErrorKind::Throttled, "{code}");
        }
        assert_eq!(classify(None, Some(429)), AwsErrorKind::Throttled);
    }

    #[test]
    fn server_errors_and_unknown_5xx_are_transient_and_retriable() {
        assert_eq!(classify(Some("InternalError"), Some(500)), AwsErrorKind::Transient);
        assert_eq!(classify(Some("ServerException"), Some(500)), AwsErrorKind::Transient);
        assert_eq!(classify(Some("SomethingNew"), Some(503)), AwsErrorKind::Transient);
        assert_eq!(classify(None, Some(502)), AwsErrorKind::Transient);
        assert!(AwsErrorKind::Transient.is_retriable());
        assert!(AwsErrorKind::Throttled.is_retriable());
    }

    #[test]
    fn permission_and_credential_errors_are_denied_and_not_retriable() {
        for code in [
            "UnauthorizedOperation",
            "AccessDeniedException",
            "AuthFailure",
            "ExpiredToken",
        ] {
            let kind = classify(Some(code), Some(403));
            assert_eq!(kind, AwsErrorKind::Denied, "{code}");
            assert!(!kind.is_retriable());
        }
    }

    #[test]
    fn ec2_not_found_and_malformed_spellings_are_classified_by_suffix() {
        assert_eq!(
            classify(Some("InvalidAMIID.NotFound"), Some(400)),
            AwsErrorKind::NotFound
        );
        assert_eq!(
            classify(Some("InvalidLaunchTemplateId.VersionNotFound"), Some(400)),
            AwsErrorKind::NotFound
        );
        assert_eq!(
            classify(Some("InvalidAMIID.Malformed"), Some(400)),
            AwsErrorKind::Invalid
        );
        assert_eq!(
            classify(Some("ResourceNotFoundException"), Some(404)),
            AwsErrorKind::NotFound
        );
    }

    #[test]
    fn a_resource_busy_with_another_change_is_a_retriable_conflict() {
        for code in ["ResourceInUseException", "InstanceRefreshInProgress", "IncorrectState"] {
            let kind = classify(Some(code), Some(400));
            assert_eq!(kind, AwsErrorKind::Conflict, "{code}");
            assert!(kind.is_retriable());
        }
    }

    #[test]
    fn a_client_error_with_an_unknown_code_is_other_not_retried() {
        let kind = classify(Some("SomethingNew"), Some(400));
        assert_eq!(kind, AwsErrorKind::Other);
        assert!(!kind.is_retriable());
        assert_eq!(kind.category(), "AWSError");
    }

    #[test]
    fn every_kind_has_a_distinct_category() {
        let kinds = [
            AwsErrorKind::Throttled,
            AwsErrorKind::Transient,
            AwsErrorKind::Conflict,
            AwsErrorKind::NotFound,
            AwsErrorKind::Denied,
            AwsErrorKind::Invalid,
            AwsErrorKind::Other,
        ];
        let categories: std::collections::BTreeSet<_> = kinds.iter().map(|k| k.category()).collect();
        assert_eq!(categories.len(), kinds.len());
    }
}
