//! Reconcile metrics. Labels are bounded: a result (`ok`/`error`) and an error category, never an object name.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsCallLabels {
    service: String,
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    channel: String,
    result: String,
}

/// The metrics of one controller.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    notifications: Family<NotificationLabels, Counter>,
    aws_calls: Family<AwsCallLabels, Counter>,
    domain: std::collections::HashMap<&'static str, Family<ResultLabels, Counter>>,
}

impl Metrics {
    /// Metrics under a prefix such as `packer_build_controller`, plus one `<name>_total{result}` counter per
    /// domain metric (e.g. `("builds", "Builds by result")`).
    pub fn new(prefix: &str, domain_metrics: &[(&'static str, &'static str)]) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register("reconcile", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile",
            duration.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by channel and result",
            notifications.clone(),
        );
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        registry.register(
            "aws_calls",
            "AWS API calls by service, action and outcome",
            aws_calls.clone(),
        );
        let mut domain = std::collections::HashMap::new();
        for (name, help) in domain_metrics {
            let family = Family::<ResultLabels, Counter>::default();
            registry.register(*name, *help, family.clone());
            domain.insert(*name, family);
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            notifications,
            aws_calls,
            domain,
        }
    }

    /// Records one reconcile.
    pub fn observe(&self, seconds: f64, error_category: Option<&str>) {
        self.duration.observe(seconds);
        let result = if error_category.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
        if let Some(category) = error_category {
            self.errors
                .get_or_create(&ErrorLabels {
                    category: category.to_owned(),
                })
                .inc();
        }
    }

    /// Records one notification delivery: `result` is `ok` or a short error reason (e.g. `invalid_auth`).
    pub fn notification(&self, channel: &str, result: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records one AWS call.
    pub fn aws_call(&self, service: &str, action: &str, outcome: &str) {
        self.aws_calls
            .get_or_create(&AwsCallLabels {
                service: service.to_owned(),
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one domain event, e.g. `("builds", "succeeded")`. Unknown names are ignored (and caught by tests).
    pub fn count(&self, name: &str, result: &str) {
        if let Some(family) = self.domain.get(name) {
            family
                .get_or_create(&ResultLabels {
                    result: result.to_owned(),
                })
                .inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_errors_are_counted_by_bounded_labels() {
        let m = Metrics::new("test_controller", &[("builds", "Builds by result")]);
        m.observe(0.02, None);
        m.observe(0.03, Some("AWSError"));
        m.aws_call("ec2", "DescribeImages", "ok");
        m.count("builds", "succeeded");
        m.count("nonsense", "x");
        let text = m.encode().expect("encode");
        assert!(
            text.contains(r#"test_controller_reconcile_total{result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"test_controller_reconcile_total{result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"test_controller_reconcile_errors_total{category="AWSError"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("test_controller_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains(r#"test_controller_aws_calls_total{service="ec2",action="DescribeImages",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"test_controller_builds_total{result="succeeded"} 1"#),
            "{text}"
        );
        assert!(!text.contains("nonsense"), "{text}");
    }
}
