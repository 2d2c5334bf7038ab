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
