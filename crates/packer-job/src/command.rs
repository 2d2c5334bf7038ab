//! Packer steps as argv.
//!
//! Order of arguments within a step is fixed so the same spec always renders the same command (and the same
//! `status.command`): flags, then user variables sorted by name, then `-var-file`, then the user's extra
//! arguments, then the controller's `ami_id`/`region` variables, then the directory `.`. Packer lets the last
//! definition of a variable win, so the base AMI the controller found is the one Packer builds from, whatever a
//! user variable, variable file or extra argument says (the AMI's `base-ami` tag must name the AMI really used).
//!
//! `init` and `validate` steps the spec does not list are added with the `build` command's working directory,
//! variables and variable file, so they check what `build` will run.

use api_types::packer_builder::{BuilderSpec, PackerCommand, PackerSubCommand};

/// Variables the controller passes when it found a base AMI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseVars {
    /// `-var ami_id=...`
    pub ami_id: String,
    /// `-var region=...`
    pub region: String,
}

/// One Packer invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Which sub-command.
    pub sub_command: PackerSubCommand,
    /// argv after `packer`, e.g. `["build", "-color=false", "."]`.
    pub args: Vec<String>,
    /// Working directory relative to the repository root.
    pub working_dir: String,
    /// `PACKER_LOG=1` for this step.
    pub debug: bool,
}

/// Renders the three steps in order. `force_debug` turns on `PACKER_LOG=1` everywhere (used for the retry
/// after a failed build).
pub fn render_steps(builder: &BuilderSpec, base: Option<&BaseVars>, force_debug: bool) -> Vec<Step> {
    [
        PackerSubCommand::Init,
        PackerSubCommand::Validate,
        PackerSubCommand::Build,
    ]
    .into_iter()
    .map(|sub| {
        let build = builder
            .commands
            .iter()
            .find(|c| c.sub_command == PackerSubCommand::Build);
        let defaults = PackerCommand {
            sub_command: sub,
            args: Vec::new(),
            variables: if sub == PackerSubCommand::Init {
                Default::default()
            } else {
                build.map(|b| b.variables.clone()).unwrap_or_default()
            },
            variables_file: build.and_then(|b| b.variables_file.clone()),
            working_dir: build.and_then(|b| b.working_dir.clone()),
            color: false,
            debug: false,
            on_error: None,
        };
        let spec = builder
            .commands
            .iter()
            .find(|c| c.sub_command == sub)
            .unwrap_or(&defaults);
        render_step(spec, builder, base, force_debug)
    })
    .collect()
}

fn render_step(spec: &PackerCommand, builder: &BuilderSpec, base: Option<&BaseVars>, force_debug: bool) -> Step {
    let sub = spec.sub_command;
    let mut args = vec![name(sub).to_owned()];
    if sub == PackerSubCommand::Build {
        // Machine-readable output carries the `artifact,0,id,REGION:AMI` line the controller reads back.
        args.push("-machine-readable".to_owned());
        if !spec.color {
            args.push("-color=false".to_owned());
        }
        if let Some(on_error) = spec.on_error {
            args.push(format!("-on-error={}", on_error.as_str()));
        }
    }
    if sub != PackerSubCommand::Init {
        for (key, value) in &spec.variables {
            args.push("-var".to_owned());
            args.push(format!("{key}={value}"));
        }
        if let Some(file) = &spec.variables_file {
            args.push(format!("-var-file={file}"));
        }
    }
    args.extend(spec.args.iter().cloned());
    if sub != PackerSubCommand::Init
        && let Some(base) = base
    {
        args.push("-var".to_owned());
        args.push(format!("ami_id={}", base.ami_id));
        args.push("-var".to_owned());
        args.push(format!("region={}", base.region));
    }
    args.push(".".to_owned());
    Step {
        sub_command: sub,
        args,
        working_dir: spec.working_dir.clone().unwrap_or_else(|| builder.dir.clone()),
        debug: spec.debug || force_debug,
    }
}

/// A fingerprint of everything in the spec that shapes the image: repository, branch, builder image, directory,
/// and per Packer command its arguments, variables, variable file and working directory (not colour, debug or
/// on-error, which change logs and failure handling, not the image). 16 hex digits of a SHA-256 over a
/// length-prefixed encoding, so it never depends on map ordering or serialisation details. Recorded when a build
/// starts and written to the AMI, so a change of any of these builds a new AMI.
pub fn build_config_hash(builder: &BuilderSpec) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut field = |value: &str| {
        hasher.update(value.len().to_string().as_bytes());
        hasher.update(b":");
        hasher.update(value.as_bytes());
    };
    field("opsy-build-config/1");
    field(&builder.repo_url);
    field(&builder.branch);
    field(&builder.image);
    field(&builder.dir);
    let mut commands: Vec<&PackerCommand> = builder.commands.iter().collect();
    commands.sort_by_key(|c| c.sub_command);
    for command in commands {
        field(name(command.sub_command));
        field(&command.args.len().to_string());
        for arg in &command.args {
            field(arg);
        }
        field(&command.variables.len().to_string());
        for (key, value) in &command.variables {
            field(key);
            field(value);
        }
        field(command.variables_file.as_deref().unwrap_or("-"));
        field(command.working_dir.as_deref().unwrap_or("-"));
    }
    hex::encode(hasher.finalize())[..16].to_owned()
}

/// The sub-command's name.
pub fn name(sub: PackerSubCommand) -> &'static str {
    match sub {
        PackerSubCommand::Init => "init",
        PackerSubCommand::Validate => "validate",
        PackerSubCommand::Build => "build",
    }
}

/// The steps as one line for people (`status.command`), every argument shell-quoted. It is never executed.
pub fn display(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|step| {
            let mut words = Vec::new();
            if step.debug {
                words.push("PACKER_LOG=1".to_owned());
            }
            words.push("packer".to_owned());
            words.extend(step.args.iter().map(|a| shell_quote(a)));
            let line = words.join(" ");
            if step.working_dir == "." {
                line
            } else {
                format!("(cd {} && {line})", shell_quote(&step.working_dir))
            }
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// POSIX shell quoting: safe words stay bare, everything else is single-quoted with `'` escaped.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:@,+%".contains(c));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_types::packer_builder::OnError;

    fn builder(commands: serde_json::Value) -> BuilderSpec {
        serde_json::from_value(serde_json::json!({
            "repoURL": "https://github.com/ibeify/eks-node-group-ami-refresh",
            "image": "hashicorp/packer:latest",
            "dir": "packer/generic-fips",
            "commands": commands,
        }))
        .expect("builder")
    }

    fn base() -> BaseVars {
        BaseVars {
            ami_id: "ami-05da30e98c637628c".into(),
            region: "us-west-2".into(),
        }
    }

    #[test]
    fn default_command_is_init_validate_build_without_colour() {
        let steps = render_steps(&builder(serde_json::json!([])), None, false);
        let argv: Vec<Vec<&str>> = steps
            .iter()
            .map(|s| s.args.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            argv,
            vec![
                vec!["init", "."],
                vec!["validate", "."],
                vec!["build", "-machine-readable", "-color=false", "."],
            ]
        );
        assert!(steps.iter().all(|s| s.working_dir == "packer/generic-fips" && !s.debug));
    }

    #[test]
    fn the_build_config_hash_changes_with_what_shapes_the_image_and_only_with_that() {
        let base = builder(serde_json::json!([{"subCommand": "build", "args": ["-force"], "variables": {"a": "1"}}]));
        let h = build_config_hash(&base);
        assert_eq!(h.len(), 16);
        assert_eq!(h, build_config_hash(&base.clone()), "deterministic");
        let changed = |commands: serde_json::Value| build_config_hash(&builder(commands));
        for different in [
            serde_json::json!([{"subCommand": "build", "args": ["-force"], "variables": {"a": "2"}}]),
            serde_json::json!([{"subCommand": "build", "args": [], "variables": {"a": "1"}}]),
            serde_json::json!([{"subCommand": "build", "args": ["-force"], "variables": {"a": "1"}, "variablesFile": "x.pkrvars.hcl"}]),
            serde_json::json!([{"subCommand": "build", "args": ["-force"], "variables": {"a": "1"}, "workingDir": "other"}]),
            // A value moved between fields is a different config (length-prefixed encoding).
            serde_json::json!([{"subCommand": "build", "args": ["-force", "a"], "variables": {}}]),
        ] {
            assert_ne!(h, changed(different.clone()), "{different}");
        }
        let mut image = base.clone();
        image.image = "hashicorp/packer:1.12.0".into();
        assert_ne!(h, build_config_hash(&image));
        let mut branch = base.clone();
        branch.branch = "release".into();
        assert_ne!(h, build_config_hash(&branch));
        // Colour, debug and on-error change logs and failure handling, not the image.
        assert_eq!(
            h,
            changed(
                serde_json::json!([{"subCommand": "build", "args": ["-force"], "variables": {"a": "1"},
                "color": true, "debug": true, "onError": "abort"}])
            )
        );
        // The order commands are listed in does not matter (they always run init, validate, build).
        let two = changed(serde_json::json!([{"subCommand": "build"}, {"subCommand": "init", "args": ["-upgrade"]}]));
        let swapped =
            changed(serde_json::json!([{"subCommand": "init", "args": ["-upgrade"]}, {"subCommand": "build"}]));
        assert_eq!(two, swapped);
    }

    #[test]
    fn added_init_and_validate_run_in_the_build_commands_working_directory() {
        let spec = builder(serde_json::json!([{"subCommand": "build", "workingDir": "packer/al2023"}]));
        let steps = render_steps(&spec, None, false);
        assert!(
            steps.iter().all(|s| s.working_dir == "packer/al2023"),
            "{:?}",
            steps.iter().map(|s| &s.working_dir).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_user_ami_id_in_args_or_variables_never_overrides_the_base_ami() {
        let spec = builder(
            serde_json::json!([{"subCommand": "build", "args": ["-var", "ami_id=ami-00000000"],
            "variables": {"ami_id": "ami-11111111"}}]),
        );
        let steps = render_steps(&spec, Some(&base()), false);
        for step in &steps[1..] {
            let last = step
                .args
                .iter()
                .rev()
                .find(|a| a.starts_with("ami_id="))
                .expect("an ami_id");
            assert_eq!(last, "ami_id=ami-05da30e98c637628c", "{:?}", step.args);
        }
    }

    #[test]
    fn seed_build_command_gets_missing_steps_and_base_variables_in_a_stable_order() {
        let spec = builder(
            serde_json::json!([{"subCommand": "build", "args": ["-force"], "color": false, "debug": true,
            "onError": "cleanup", "variables": {"z_last": "1", "eks_version": "1.30"}, "variablesFile": "al2_amd64.pkrvars.hcl"}]),
        );
        let steps = render_steps(&spec, Some(&base()), false);
        assert_eq!(steps[0].args, ["init", "."]);
        // The added validate checks what build will run: the same variables and variable file.
        assert_eq!(
            steps[1].args,
            [
                "validate",
                "-var",
                "eks_version=1.30",
                "-var",
                "z_last=1",
                "-var-file=al2_amd64.pkrvars.hcl",
                "-var",
                "ami_id=ami-05da30e98c637628c",
                "-var",
                "region=us-west-2",
                "."
            ]
        );
        // The controller's base variables come last, after the variable file and the extra arguments: Packer
        // lets the last definition win, so the AMI built from is the one the controller found.
        assert_eq!(
            steps[2].args,
            [
                "build",
                "-machine-readable",
                "-color=false",
                "-on-error=cleanup",
                "-var",
                "eks_version=1.30",
                "-var",
                "z_last=1",
                "-var-file=al2_amd64.pkrvars.hcl",
                "-force",
                "-var",
                "ami_id=ami-05da30e98c637628c",
                "-var",
                "region=us-west-2",
                ".",
            ]
        );
        assert!(steps[2].debug && !steps[0].debug);
        assert!(
            !steps.iter().flat_map(|s| &s.args).any(|a| a == "-debug"),
            "debug is PACKER_LOG=1, never -debug"
        );
    }

    #[test]
    fn colour_and_on_error_follow_the_spec() {
        let spec = builder(serde_json::json!([{"subCommand": "build", "color": true, "onError": "abort"}]));
        let build = &render_steps(&spec, None, false)[2];
        assert!(!build.args.contains(&"-color=false".to_owned()));
        assert!(build.args.contains(&format!("-on-error={}", OnError::Abort.as_str())));
    }

    #[test]
    fn force_debug_turns_on_packer_log_for_every_step() {
        let steps = render_steps(&builder(serde_json::json!([])), None, true);
        assert!(steps.iter().all(|s| s.debug));
    }

    #[test]
    fn per_command_working_dir_overrides_builder_dir() {
        let spec = builder(serde_json::json!([{"subCommand": "init", "workingDir": "other"}]));
        let steps = render_steps(&spec, None, false);
        assert_eq!(steps[0].working_dir, "other");
        assert_eq!(steps[1].working_dir, "packer/generic-fips");
    }

    #[test]
    fn hostile_values_stay_single_arguments_and_are_quoted_for_display() {
        let spec = builder(
            serde_json::json!([{"subCommand": "build", "args": ["; touch pwned", "$(id)", "a'b", "line\nbreak"],
            "variables": {"x": "1; rm -rf / `id`"}}]),
        );
        let steps = render_steps(&spec, None, false);
        let build = &steps[2];
        assert!(build.args.contains(&"; touch pwned".to_owned()));
        assert!(build.args.contains(&"x=1; rm -rf / `id`".to_owned()));
        let shown = display(&steps);
        assert!(shown.contains("'; touch pwned'"), "{shown}");
        assert!(shown.contains("'$(id)'"), "{shown}");
        assert!(shown.contains(r"'a'\''b'"), "{shown}");
        assert!(shown.contains("'x=1; rm -rf / `id`'"), "{shown}");
    }

    #[test]
    fn display_reads_like_the_seed_status_command() {
        let shown = display(&render_steps(&builder(serde_json::json!([])), Some(&base()), false));
        assert_eq!(
            shown,
            "(cd packer/generic-fips && packer init .) && (cd packer/generic-fips && packer validate -var ami_id=ami-05da30e98c637628c -var region=us-west-2 .) && (cd packer/generic-fips && packer build -machine-readable -color=false -var ami_id=ami-05da30e98c637628c -var region=us-west-2 .)"
        );
    }
}
