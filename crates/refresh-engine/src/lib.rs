//! Pure rollout decisions of the ami-refresh-controller.
//!
//! - [`window`]: five-field cron maintenance windows in an IANA time zone: is a window open at `now`, and when
//!   does the next one open;
//! - [`plan`]: given the target AMI, the node groups as observed in AWS and the previous status, which node groups
//!   are up to date, which roll now, which wait and why;
//! - [`fit`]: whether the target AMI's architecture runs on a group's instance types;
//! - [`marker`]: the mark on launch template versions this controller made (reuse, adoption, clean-up);
//! - [`summary`]: the phase, progress and conditions a rollout step reports.
//!
//! Nothing here reads a clock, talks to AWS or Kubernetes: every input is an argument, so every safety property
//! of a rollout is a unit test.

pub mod claim;
pub mod fit;
pub mod marker;
pub mod plan;
pub mod summary;
pub mod target;
pub mod transitions;
pub mod window;

pub use plan::{Hold, Observed, Plan, PlanInputs, plan};
pub use window::{Schedule, WindowError, WindowState, window_state};
