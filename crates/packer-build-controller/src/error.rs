//! Errors of the controller. Each has a short category: it is the Event reason and the metric label.
//!
//! Each controller keeps its own enum (the variants beyond Kube/Aws/InvalidSpec differ); what both share, the
//! typed [`controller_runtime::aws::AwsError`] and its classification, lives in `controller-runtime`.

/// What went wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// An AWS call failed (classified in one place: [`controller_runtime::aws::classify`]).
    #[error(transparent)]
    Aws(#[from] controller_runtime::aws::AwsError),
    /// The spec cannot be acted on (what the schema cannot catch).
    #[error("{0}")]
    InvalidSpec(String),
    /// A Secret the spec names does not exist.
    #[error("Secret {0:?} does not exist in the namespace")]
    SecretNotFound(String),
    /// The filters or SSM parameter found no base AMI.
    #[error("{0}")]
    NoBaseAmi(String),
    /// The base AMI source gave something that is not an AMI ID (e.g. an SSM parameter of another kind).
    #[error("{0}")]
    InvalidBaseAmi(String),
    /// The API server refused the build Job (invalid name or label, quota, an admission policy): the server's
    /// message says why; retrying unchanged cannot help.
    #[error("the API server refused the build Job: {0}")]
    JobRejected(String),
    /// An object could not be (de)serialised.
    #[error("serialisation failed: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// Short CamelCase category: Event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubernetesError",
            Self::Aws(e) => e.category(),
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::SecretNotFound(_) => "SecretNotFound",
            Self::NoBaseAmi(_) => "NoBaseAMI",
            Self::InvalidBaseAmi(_) => "InvalidBaseAMI",
            Self::JobRejected(_) => "JobRejected",
            Self::Serde(_) => "SerializationError",
        }
    }

    /// Problems only a change of the spec or the world fixes (as opposed to transient API errors).
    pub fn is_user_facing(&self) -> bool {
        matches!(
            self,
            Self::InvalidSpec(_)
                | Self::SecretNotFound(_)
                | Self::NoBaseAmi(_)
                | Self::InvalidBaseAmi(_)
                | Self::JobRejected(_)
        )
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
