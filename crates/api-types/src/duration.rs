//! The one duration parser of the project.
//!
//! Every duration in a spec (`timeOuts.expiresIn`, `timeOuts.controllerTimer`, `expiresIn`, soak time, windows...)
//! is written as a human string such as `"48h"`, `"5m"`, `"30d"`, `"2w"` or `"1h 30m"` and parsed here. The
//! accepted grammar is humantime's (which includes `d` for days and `w` for weeks; `m` is minutes and `M` is
//! months). The CRD schema carries [`DURATION_PATTERN`] so malformed and zero values are refused at `kubectl
//! apply`; this parser is the second line for anything the pattern lets through (overflow).
//!
//! This module must never turn a bad value into a default: a typo'd `controllerTimer` that silently became zero was
//! a hot loop in the Go original, and a zero `expiresIn` means a rebuild (and an AMI bill) on every reconcile.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Units humantime accepts, longest first so the regex alternation prefers whole words.
macro_rules! units {
    () => {
        "nanoseconds|nanosecond|nsec|ns|microseconds|microsecond|usec|us|µs|milliseconds|millisecond|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y"
    };
}

/// The schema pattern for duration strings: one or more `<number><unit>` groups, optionally separated by spaces,
/// at least one of them not zero, so `"0s"` or `"0h 0m"` is refused at `kubectl apply` instead of by the
/// controller. RE2 syntax (no look-ahead), as the API server's validation uses.
pub const DURATION_PATTERN: &str = concat!(
    r"^\s*([0-9]+(\.[0-9]+)?\s*(",
    units!(),
    r")\s*)*([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)\s*(",
    units!(),
    r")\s*([0-9]+(\.[0-9]+)?\s*(",
    units!(),
    r")\s*)*$"
);

/// Why a duration string was refused. The message names the value, never a fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string was empty or only whitespace.
    #[error("duration is empty; use a value such as \"48h\", \"30d\" or \"2w\"")]
    Empty,
    /// humantime refused the string.
    #[error("invalid duration {value:?}: {reason}; use a value such as \"48h\", \"30d\" or \"2w\"")]
    Invalid {
        /// The refused input.
        value: String,
        /// humantime's explanation.
        reason: String,
    },
    /// The string parsed to zero, which is never a meaningful lifetime or period.
    #[error("duration {value:?} is zero; it must be positive")]
    Zero {
        /// The refused input.
        value: String,
    },
    /// The string parsed to less than the field's lower bound.
    #[error("duration {value:?} is shorter than the minimum of {min}")]
    TooShort {
        /// The refused input.
        value: String,
        /// The bound, as written in [`bounds`].
        min: &'static str,
    },
}

/// Lower bounds of spec durations. Each is enforced twice from the same text: by a CEL rule in the CRD
/// ([`at_least_rule`], so `kubectl apply` refuses the value with a message naming the field) and when the
/// controller parses the spec ([`HumanDuration::parse_at_least`], for the forms the rule cannot evaluate).
pub mod bounds {
    /// `PackerBuilder.spec.timeOuts.expiresIn`: an AMI that expires sooner means a build (and a bill) per hour.
    pub const PB_EXPIRES_IN: &str = "1h";
    /// `PackerBuilder.spec.timeOuts.controllerTimer`: shorter periods only hammer EC2's DescribeImages.
    pub const PB_CONTROLLER_TIMER: &str = "30s";
    /// `PackerBuilder.spec.timeOuts.buildTimeout`: no Packer build finishes sooner.
    pub const PB_BUILD_TIMEOUT: &str = "1m";
    /// `PackerBuilder.spec.timeOuts.jobTtl`: the controller must see the finished Job before it is collected.
    pub const PB_JOB_TTL: &str = "1m";
    /// `PackerBuilder.spec.retention.maxAge`: younger AMIs are the ones node groups are being rolled onto.
    pub const PB_RETENTION_MAX_AGE: &str = "1h";
    /// `AMIRefresher.spec.expiresIn`: the seed AMIRefresher's `"5m"` is the shortest accepted.
    pub const AMR_EXPIRES_IN: &str = "5m";
    /// `AMIRefresher.spec.maintenanceWindows[].duration`: windows open on whole minutes.
    pub const AMR_WINDOW: &str = "1m";
}

/// Unit words humantime accepts that have a Go `time.ParseDuration` equivalent, longest first (so `milliseconds`
/// is rewritten before `seconds`, `msec` before `sec`).
const GO_UNIT_WORDS: &[(&str, &str)] = &[
    ("milliseconds", "ms"),
    ("millisecond", "ms"),
    ("microseconds", "us"),
    ("microsecond", "us"),
    ("nanoseconds", "ns"),
    ("nanosecond", "ns"),
    ("msec", "ms"),
    ("usec", "us"),
    ("nsec", "ns"),
    ("seconds", "s"),
    ("second", "s"),
    ("secs", "s"),
    ("sec", "s"),
    ("minutes", "m"),
    ("minute", "m"),
    ("mins", "m"),
    ("min", "m"),
    ("hours", "h"),
    ("hour", "h"),
    ("hrs", "h"),
    ("hr", "h"),
];

/// The CEL rule (Kubernetes CEL: strings extension and `duration()`) that refuses a duration string below `min`.
///
/// CEL's `duration()` reads Go syntax (`1h30m`, units `h`, `m`, `s`, `ms`, `us`, `ns`), so the rule rewrites
/// humantime's unit words to Go units and removes spaces; a value that is then Go syntax is compared with `min`.
/// A value with a day, week, month or year unit is not Go syntax and passes the rule (it is at least a day unless
/// written as a tiny fraction, which the controller's [`HumanDuration::parse_at_least`] still refuses).
pub fn at_least_rule(min: &str) -> String {
    let mut normalized = "self.replace(' ', '')".to_owned();
    for (word, unit) in GO_UNIT_WORDS {
        normalized = format!("{normalized}.replace('{word}', '{unit}')");
    }
    format!(
        "!{normalized}.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration({normalized}) >= duration('{min}')"
    )
}

/// Parses a duration string (humantime grammar, with `d` and `w`). Zero is refused.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let parsed = humantime::parse_duration(trimmed).map_err(|e| DurationError::Invalid {
        value: input.to_owned(),
        reason: e.to_string(),
    })?;
    if parsed.is_zero() {
        return Err(DurationError::Zero {
            value: input.to_owned(),
        });
    }
    Ok(parsed)
}

/// A duration as written in a spec. It keeps the user's text (so it round-trips through `kubectl get -o yaml`
/// unchanged) and is parsed on use with [`HumanDuration::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(pub String);

impl HumanDuration {
    /// Builds a value from text without checking it; [`HumanDuration::parse`] checks.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text; see [`parse_duration`].
    pub fn parse(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.0)
    }

    /// Parses the text and refuses values below `min` (one of [`bounds`]).
    pub fn parse_at_least(&self, min: &'static str) -> Result<Duration, DurationError> {
        let value = self.parse()?;
        let bound = parse_duration(min).expect("bounds are valid durations");
        if value < bound {
            return Err(DurationError::TooShort {
                value: self.0.clone(),
                min,
            });
        }
        Ok(value)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)?;
        Ok(Self(s.to_owned()))
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "HumanDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn seed_values_parse() {
        assert_eq!(parse_duration("48h"), Ok(secs(48 * 3600)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
    }

    #[test]
    fn days_and_weeks_are_accepted() {
        assert_eq!(parse_duration("30d"), Ok(secs(30 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(secs(14 * 86_400)));
        assert_eq!(parse_duration("1w 2d"), Ok(secs(9 * 86_400)));
    }

    #[test]
    fn compound_values_are_summed() {
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("1h 30m 15s"), Ok(secs(5415)));
    }

    #[test]
    fn lowercase_m_is_minutes_and_uppercase_is_months() {
        assert_eq!(parse_duration("1m"), Ok(secs(60)));
        assert!(parse_duration("1M").expect("months parse") > secs(29 * 86_400));
    }

    #[test]
    fn garbage_is_a_typed_error_never_zero() {
        for bad in [
            "48",
            "h",
            "forty-eight hours",
            "48 hrs ago",
            "-5m",
            "5x",
            "1.5.2h",
            "5 m s",
        ] {
            match parse_duration(bad) {
                Err(DurationError::Invalid { value, .. }) => assert_eq!(value, bad),
                other => panic!("{bad:?} should be Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn fractions_are_accepted() {
        assert_eq!(parse_duration("1.5h"), Ok(secs(5400)));
    }

    #[test]
    fn schema_pattern_agrees_with_parser() {
        let pattern = regex::Regex::new(DURATION_PATTERN).expect("pattern compiles");
        let corpus = [
            "48h",
            "5m",
            "30d",
            "2w",
            "1h30m",
            "1h 30m 15s",
            "1.5h",
            "90s",
            "1y",
            "3M",
            "10 minutes",
            "2 weeks",
            "",
            " ",
            "48",
            "h",
            "5x",
            "-5m",
            "1.5.2h",
            "48 hrs ago",
            "forty",
            "5m;rm",
            "1h\n",
            "0.h",
            "0s",
            "0h 0m",
            "00m",
            "0.0h",
            "0.5h",
            "1h 0m",
            "0m 30s",
            "0 seconds",
            "007s",
            "0.05s",
        ];
        for text in corpus {
            let accepted_by_schema = pattern.is_match(text);
            let parsed = parse_duration(text);
            assert_eq!(
                accepted_by_schema,
                parsed.is_ok(),
                "schema and parser disagree on {text:?}: {parsed:?}"
            );
        }
    }

    #[test]
    fn empty_and_zero_are_refused() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("   "), Err(DurationError::Empty));
        assert!(matches!(parse_duration("0s"), Err(DurationError::Zero { .. })));
        assert!(matches!(parse_duration("0h 0m"), Err(DurationError::Zero { .. })));
    }

    #[test]
    fn error_message_names_the_value() {
        let err = parse_duration("5x").expect_err("5x is invalid");
        assert!(err.to_string().contains("\"5x\""), "{err}");
    }

    #[test]
    fn human_duration_keeps_the_text() {
        let d: HumanDuration = "2w".parse().expect("valid");
        assert_eq!(d.as_str(), "2w");
        assert_eq!(serde_json::to_value(&d).expect("serialize"), serde_json::json!("2w"));
        assert!("nope".parse::<HumanDuration>().is_err());
    }
}
