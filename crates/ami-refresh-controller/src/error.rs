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
}

impl Error {
    /// Short CamelCase category: Event reason and metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubernetesError",
            Self::Aws(e) => e.category(),
            Self::InvalidSpec(_) => "InvalidSpec",
        }
    }

    /// AWS refused the request itself (a bad parameter, a missing resource): retrying the same call cannot help,
    /// so the node group is marked failed instead of retrying forever.
    pub fn is_permanent_aws(&self) -> bool {
        use controller_runtime::aws::AwsErrorKind;
        matches!(self, Self::Aws(e) if matches!(e.kind, AwsErrorKind::NotFound | AwsErrorKind::Invalid))
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
