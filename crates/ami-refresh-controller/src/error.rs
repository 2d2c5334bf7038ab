//! Errors of the controller. Each has a short category: it is the Event reason and the metric label.

/// What went wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// An AWS call failed.
    #[error("AWS {operation} failed: {message}")]
    Aws {
        /// The AWS operation.
        operation: &'static str,
        /// The AWS error code, when the service sent one.
        code: Option<String>,
        /// The SDK's error, with its code.
        message: String,
    },
    /// The spec cannot be acted on (what the schema cannot catch).
    #[error("{0}")]
    InvalidSpec(String),
}

impl Error {
    /// Short CamelCase category: Event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubernetesError",
            Self::Aws { code, .. } if is_throttle(code.as_deref()) => "AWSThrottled",
            Self::Aws { .. } => "AWSError",
            Self::InvalidSpec(_) => "InvalidSpec",
        }
    }

    /// AWS refused the request itself (a bad parameter, a missing resource): retrying the same call cannot help,
    /// so the node group is marked failed instead of retrying forever.
    pub fn is_permanent_aws(&self) -> bool {
        match self {
            Self::Aws { code: Some(code), .. } => matches!(
                code.as_str(),
                "InvalidParameterException"
                    | "InvalidRequestException"
                    | "ResourceNotFoundException"
                    | "ValidationError"
                    | "UnsupportedOperation"
                    | "InvalidLaunchTemplateId.NotFound"
                    | "InvalidLaunchTemplateId.VersionNotFound"
                    | "InvalidAMIID.NotFound"
                    | "InvalidAMIID.Malformed"
            ),
            _ => false,
        }
    }
}

fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException")
    )
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
