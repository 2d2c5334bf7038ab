//! How a PackerBuilder becomes a Kubernetes Job, and how the Job's outcome is read back. Pure: plain values in,
//! plain values out; no client, no clock reads.
//!
//! - [`command`]: the Packer steps as argv (`init`, `validate`, `build`, always in that order, missing ones added),
//!   and the human-readable, shell-quoted rendering for `status.command`.
//! - [`job`]: the `batch/v1` Job: git-sync init container, one container per Packer step, no shell except one
//!   constant wrapper script that receives every user value as a positional argument.
//! - [`outcome`]: the built AMI from Packer's machine-readable `artifact,0,id,REGION:AMI` line.
//!
//! This crate must never build shell text out of user input.

pub mod command;
pub mod job;
pub mod outcome;
