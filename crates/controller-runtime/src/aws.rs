//! Small AWS helpers both controllers share: the error text of an SDK error (code and message, never a request
//! body or credentials) and the conversion of an EC2 image into the tag scheme's [`ami_tags::Image`].

use aws_sdk_ec2::error::ProvideErrorMetadata;

/// `Code: message` of an SDK error, or its display text when the service sent no code.
pub fn error_text<E: ProvideErrorMetadata + std::fmt::Display>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}

/// The AWS error code of an SDK error, if the service sent one.
pub fn error_code<E: ProvideErrorMetadata>(e: &E) -> Option<String> {
    e.code().map(str::to_owned)
}

/// An EC2 image as the tag scheme sees it.
pub fn to_image(i: &aws_sdk_ec2::types::Image) -> ami_tags::Image {
    ami_tags::Image {
        id: i.image_id().unwrap_or_default().to_owned(),
        name: i.name().map(str::to_owned),
        creation_date: i.creation_date().and_then(|d| d.parse().ok()),
        state: i.state().map(|s| s.as_str().to_owned()),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect(),
    }
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
