//! `testbed`: the whole system on one machine, for people and for tests. Test infrastructure, not a product
//! component. `cargo xtask demo` and `cargo xtask bench` run it after installing what it needs (kubectl, the
//! emulator's venv, Packer); its own test runs the demo on the controller binaries of the test build, so the test
//! suite compiles the AWS SDK once.
//!
//! - `demo [--debug] [--keep] [--timeout 5m] [--bin-dir DIR]`: the loop from base AMI to rolled node groups (see
//!   `demo.rs`); `--bin-dir` uses controller binaries already built there instead of building them.
//! - `bench [--quick] --bin-dir DIR`: cost and scale of both controllers (see `bench.rs`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod demo;

#[derive(Parser, Debug)]
#[command(name = "testbed", about = "opsy-ami-operator on one machine: demo and bench")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// The whole loop on one machine: AWS emulator, in-memory API server, both controllers, real Packer.
    Demo {
        /// Build the controllers in the dev profile instead of release.
        #[arg(long)]
        debug: bool,
        /// Keep everything running after the summary (Ctrl-C stops it) and print ready-to-paste commands.
        #[arg(long)]
        keep: bool,
        /// Give up after this long (humantime, e.g. `5m`).
        #[arg(long, default_value = "5m", value_parser = api_types::parse_duration)]
        timeout: std::time::Duration,
        /// Use the controller binaries in this directory instead of building them.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Cost and scale of both controllers: writes <target>/bench/report.json and report.md.
    Bench {
        /// Small sizes, for a quick smoke run.
        #[arg(long)]
        quick: bool,
        /// Where the (release) controller binaries are.
        #[arg(long)]
        bin_dir: PathBuf,
        /// Run only the steady-state PackerBuilder scenario whose name contains this (e.g. `1000 PackerBuilders`),
        /// to look into one size; the report then holds that scenario alone.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    let target = target_dir(&root);
    match cli.task {
        Task::Demo {
            debug,
            keep,
            timeout,
            bin_dir,
        } => demo::run(
            &root,
            &target,
            &tools_dir(&target),
            &demo::Options {
                debug,
                keep,
                timeout,
                bin_dir,
            },
        ),
        Task::Bench { quick, bin_dir, only } => bench::run(&target, &bin_dir, quick, only.as_deref()),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Where `cargo xtask` installed kubectl and helm (the directory of `$KUBECTL` when set).
fn tools_dir(target: &Path) -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .and_then(|k| k.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| target.join("tools/bin"))
}
