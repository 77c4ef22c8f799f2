//! InvocationCounts a step into the shell script that AWS-RunShellScript runs on the builder.
//!
//! File content travels base64-encoded inside a quoted here-document, so that any byte sequence
//! (quotes, `$`, backslashes, a line that reads `EOF`) arrives unchanged and nothing in it is ever
//! interpreted by the shell.

use std::collections::BTreeMap;

use base64::Engine;

use crate::spec::{Action, MAX_OUTPUT_VALUE_CHARS, Step};

/// The script for one step. Commands run with `set -e`, as Packer's shell provisioner does, so a
/// failing command fails the step instead of being hidden by the ones after it.
///
/// A command step runs inside a wrapper that keeps its stdout and stderr in files on the builder
/// and prints them when it ends: SSM keeps only the *first* 24,000 characters of stdout and 8,000
/// of stderr (GetCommandInvocation), while what explains a failure is at the end. So what SSM
/// keeps is: the outputs line (a step with `Outputs`, on success), a note of how much was cut,
/// then the last [`STDOUT_TAIL`] bytes of stdout, and likewise the last [`STDERR_TAIL`] bytes of
/// stderr. The step runs under `timeout` a little short of its TimeoutSeconds, so that a step
/// that overruns still shows its last lines (SSM's own timeout would kill the wrapper too).
pub fn render(step: &Step) -> String {
    let body = render_body(step);
    if matches!(step.action, Action::File { .. }) {
        // A file step prints nothing but a failing command's error.
        return body;
    }
    let limit = step_time_limit(step.timeout_seconds);
    let delimiter = format!("ECS_AMI_STEP_{}", &crate::hash::sha256_hex(&body)[..16]);
    // /var/tmp, not /tmp: AL2023's /tmp is memory, and a chatty step's log could fill it.
    let mut script = String::from(
        "set +e\n\
         ecs_ami_dir=\"$(mktemp -d -p /var/tmp)\"\n",
    );
    if !step.outputs.is_empty() {
        script.push_str(
            "ECS_AMI_OUTPUTS=\"$ecs_ami_dir/outputs\"; : > \"$ECS_AMI_OUTPUTS\"; export ECS_AMI_OUTPUTS\n",
        );
    }
    script.push_str(&format!("cat > \"$ecs_ami_dir/step\" <<'{delimiter}'\n"));
    script.push_str(&body);
    script.push_str(&format!("{delimiter}\n"));
    script.push_str(&format!(
        "ecs_ami_started=$SECONDS\n\
         timeout --kill-after=1 {limit} bash \"$ecs_ami_dir/step\" > \"$ecs_ami_dir/out\" 2> \"$ecs_ami_dir/err\" < /dev/null\n\
         ecs_ami_status=$?\n"
    ));
    if !step.outputs.is_empty() {
        script.push_str(&format!(
            "if [ \"$ecs_ami_status\" -eq 0 ]; then\n\
             printf '%s%s\\n' '{OUTPUTS_MARKER}' \"$(base64 -w0 < \"$ECS_AMI_OUTPUTS\")\"\n\
             fi\n"
        ));
    }
    script.push_str(&format!(
        "ecs_ami_tail() {{\n\
         ecs_ami_size=$(wc -c < \"$1\")\n\
         if [ \"$ecs_ami_size\" -gt \"$2\" ]; then\n\
         printf '{CUT_NOTE}%s bytes of %s cut; its last %s follow]\\n' \"$((ecs_ami_size - $2))\" \"$3\" \"$2\"\n\
         fi\n\
         tail -c \"$2\" \"$1\"\n\
         }}\n\
         ecs_ami_tail \"$ecs_ami_dir/out\" {STDOUT_TAIL} stdout\n\
         ecs_ami_tail \"$ecs_ami_dir/err\" {STDERR_TAIL} stderr >&2\n\
         if {{ [ \"$ecs_ami_status\" -eq 124 ] || [ \"$ecs_ami_status\" -eq 137 ]; }} && [ $((SECONDS - ecs_ami_started)) -ge {limit} ]; then\n\
         printf '%s\\n' '{TIMEOUT_NOTE}' >&2\n\
         ecs_ami_status=124\n\
         fi\n\
         rm -rf \"$ecs_ami_dir\"\n\
         exit \"$ecs_ami_status\"\n"
    ));
    script
}

/// How much of a step's stdout and stderr is kept: within SSM's 24,000 and 8,000 characters,
/// leaving room for the outputs line and the notes.
pub const STDOUT_TAIL: usize = 20_000;
pub const STDERR_TAIL: usize = 7_000;

/// Begins the line that says how much of a stream was cut.
pub const CUT_NOTE: &str = "[ecs-ami: the first ";

/// The last stderr line of a step stopped by the wrapper's `timeout` (exit status 124).
pub const TIMEOUT_NOTE: &str = "ecs-ami: the step ran out of its TimeoutSeconds and was stopped";

/// The wrapper's own limit: TimeoutSeconds less a tenth (2 to 30 s), so that it ends the step
/// (TERM, then KILL 1 s later) and prints its output before SSM's executionTimeout (the whole
/// TimeoutSeconds) kills it all. A step's own exit status 124 or 137 (a nested `timeout`, the
/// OOM killer) is told apart by the time it ran.
pub fn step_time_limit(timeout_seconds: u32) -> u32 {
    let margin = (timeout_seconds / 10).clamp(2, 30);
    timeout_seconds.saturating_sub(margin).max(1)
}

/// Starts the stdout line that carries a step's outputs (base64 of its `NAME=value` lines).
pub const OUTPUTS_MARKER: &str = "ECS-AMI-OUTPUTS ";

/// The outputs a successful step wrote, checked against what it declared. Errors name the
/// output and say what is wrong.
pub fn read_outputs(step: &Step, stdout: &str) -> Result<BTreeMap<String, String>, String> {
    let encoded = stdout
        .lines()
        .find_map(|line| line.strip_prefix(OUTPUTS_MARKER))
        .ok_or("its outputs line is missing from its output")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("its outputs line is not base64: {e}"))?;
    let text = String::from_utf8(decoded).map_err(|_| "its outputs are not UTF-8 text")?;
    let mut written = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "it wrote {line:?} to $ECS_AMI_OUTPUTS; each line must be NAME=value"
            ));
        };
        // The last line for a name wins, as with repeated shell assignments.
        written.insert(name.trim().to_owned(), value.to_owned());
    }
    let mut outputs = BTreeMap::new();
    for name in &step.outputs {
        match written.remove(name) {
            None => {
                return Err(format!(
                    "it declares output {name:?} but did not write `{name}=...` to $ECS_AMI_OUTPUTS"
                ));
            }
            Some(value) if value.chars().count() > MAX_OUTPUT_VALUE_CHARS => {
                return Err(format!(
                    "its output {name:?} is {} characters, more than the {MAX_OUTPUT_VALUE_CHARS} an AMI tag holds",
                    value.chars().count()
                ));
            }
            Some(value) => {
                outputs.insert(name.clone(), value);
            }
        }
    }
    if !written.is_empty() {
        let extra: Vec<&str> = written.keys().map(String::as_str).collect();
        tracing::warn!(step = %step.name, undeclared = %extra.join(","), "the step wrote outputs it does not declare in Outputs: ignored");
    }
    Ok(outputs)
}

fn render_body(step: &Step) -> String {
    let mut script = String::from("set -e\n");
    match &step.action {
        Action::Command {
            commands,
            environment,
        } => {
            for (name, value) in environment {
                script.push_str(&format!("export {name}={}\n", single_quote(value)));
            }
            for command in commands {
                script.push_str(command);
                script.push('\n');
            }
        }
        Action::File {
            path,
            content,
            mode,
            owner,
        } => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(content.as_bytes());
            let target = single_quote(path);
            let staging = single_quote(&format!("{path}.ecs-ami-new"));
            script.push_str(&format!("mkdir -p -- \"$(dirname -- {target})\"\n"));
            script.push_str(&format!("base64 -d > {staging} <<'ECS_AMI_CONTENT'\n"));
            for line in encoded.as_bytes().chunks(76) {
                script.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                script.push('\n');
            }
            script.push_str("ECS_AMI_CONTENT\n");
            script.push_str(&format!("chmod {mode} {staging}\n"));
            script.push_str(&format!("chown {owner} {staging}\n"));
            // Rename last, so a reader never sees a half-written file.
            script.push_str(&format!("mv -f -- {staging} {target}\n"));
        }
    }
    script
}

/// Quote for POSIX sh: inside single quotes nothing is special except the quote itself.
pub fn single_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r#"'\''"#))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::process::Command;

    fn run(script: &str, root: &std::path::Path) -> std::process::Output {
        // The test rewrites absolute paths into a scratch directory; ownership is the caller's.
        let script = script.replace("/etc/", &format!("{}/etc/", root.display()));
        let script = script.replace("chown root:root", "true");
        Command::new("bash").arg("-c").arg(script).output().unwrap()
    }

    #[test]
    fn file_content_arrives_byte_for_byte() {
        let tricky = "line 'one' \"two\" $HOME `date` \\n\nECS_AMI_CONTENT\n\u{0}\u{7f} ünï\n";
        let step = Step {
            name: "write".into(),
            timeout_seconds: 60,
            outputs: Vec::new(),
            action: Action::File {
                path: "/etc/ecs/it's.conf".into(),
                content: tricky.into(),
                mode: "0600".into(),
                owner: "root:root".into(),
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let out = run(&render(&step), dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = std::fs::read(dir.path().join("etc/ecs/it's.conf")).unwrap();
        assert_eq!(written, tricky.as_bytes());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("etc/ecs/it's.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    fn step_with_outputs(commands: &[&str], outputs: &[&str]) -> Step {
        Step {
            name: "versions".into(),
            timeout_seconds: 60,
            outputs: outputs.iter().map(|o| o.to_string()).collect(),
            action: Action::Command {
                commands: commands.iter().map(|c| c.to_string()).collect(),
                environment: BTreeMap::new(),
            },
        }
    }

    fn run_step(step: &Step) -> std::process::Output {
        Command::new("bash")
            .arg("-c")
            .arg(render(step))
            .output()
            .unwrap()
    }

    #[test]
    fn outputs_come_back_first_even_after_a_chatty_step() {
        let step = step_with_outputs(
            &[
                // 60,000 bytes of chatter: more than SSM keeps of stdout.
                "head -c 60000 /dev/zero | tr '\\0' 'x'",
                "echo",
                "echo \"Docker=25.0.8 (with = and spaces)\" >> \"$ECS_AMI_OUTPUTS\"",
                "echo Agent=1.89.2 >> \"$ECS_AMI_OUTPUTS\"",
                "echo Agent=1.90.0 >> \"$ECS_AMI_OUTPUTS\"",
                "echo Extra=ignored >> \"$ECS_AMI_OUTPUTS\"",
                "echo the end",
            ],
            &["Docker", "Agent"],
        );
        let out = run_step(&step);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        // What SSM would keep: the first 24,000 characters.
        let kept: String = stdout.chars().take(24_000).collect();
        assert!(kept.starts_with(OUTPUTS_MARKER));
        let outputs = read_outputs(&step, &kept).unwrap();
        assert_eq!(
            outputs,
            BTreeMap::from([
                ("Agent".into(), "1.90.0".into()),
                ("Docker".into(), "25.0.8 (with = and spaces)".into())
            ])
        );
        // The end of the step's own stdout is kept, within 20,000 bytes.
        assert!(stdout.ends_with("the end\n"));
        assert!(stdout.len() < 20_000 + 200);
    }

    fn command_step(commands: &[&str], timeout_seconds: u32) -> Step {
        Step {
            timeout_seconds,
            ..step_with_outputs(commands, &[])
        }
    }

    #[test]
    fn what_ssm_keeps_of_a_long_failing_step_ends_with_its_last_lines() {
        let step = command_step(
            &[
                "for i in $(seq 1 5000); do echo \"stdout line $i\"; echo \"stderr line $i\" >&2; done",
                "echo 'the real cause' >&2",
                "exit 3",
            ],
            60,
        );
        let out = run_step(&step);
        assert_eq!(out.status.code(), Some(3));
        // What SSM would keep: the first 24,000 and 8,000 characters.
        let stdout: String = String::from_utf8(out.stdout)
            .unwrap()
            .chars()
            .take(24_000)
            .collect();
        let stderr: String = String::from_utf8(out.stderr)
            .unwrap()
            .chars()
            .take(8_000)
            .collect();
        assert!(stdout.starts_with(CUT_NOTE), "{}", &stdout[..100]);
        assert!(stdout.ends_with("stdout line 5000\n"));
        assert!(stderr.starts_with(CUT_NOTE));
        assert!(
            stderr.ends_with("stderr line 5000\nthe real cause\n"),
            "{}",
            &stderr[stderr.len() - 200..]
        );
        // A short step's output is passed through whole, without a note.
        let short = run_step(&command_step(&["echo hello", "echo oops >&2"], 60));
        assert_eq!(String::from_utf8(short.stdout).unwrap(), "hello\n");
        assert_eq!(String::from_utf8(short.stderr).unwrap(), "oops\n");
    }

    #[test]
    fn a_step_that_overruns_is_stopped_short_of_its_timeout_and_shows_its_end() {
        assert_eq!(step_time_limit(2), 1);
        assert_eq!(step_time_limit(10), 8);
        assert_eq!(step_time_limit(60), 54);
        assert_eq!(step_time_limit(3600), 3570);
        let step = command_step(&["echo started", "echo waiting >&2", "sleep 30"], 2);
        let started = std::time::Instant::now();
        let out = run_step(&step);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(124));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "started\n");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.ends_with(&format!("waiting\n{TIMEOUT_NOTE}\n")),
            "{stderr}"
        );
    }

    #[test]
    fn a_step_exiting_124_itself_is_not_reported_as_timed_out() {
        let out = run_step(&command_step(&["echo mine >&2", "exit 124"], 60));
        assert_eq!(out.status.code(), Some(124));
        assert_eq!(String::from_utf8(out.stderr).unwrap(), "mine\n");
    }

    #[test]
    fn a_step_with_outputs_still_stops_at_the_first_failure() {
        let step = step_with_outputs(
            &[
                "echo V=1 >> \"$ECS_AMI_OUTPUTS\"",
                "echo before",
                "false",
                "echo after",
            ],
            &["V"],
        );
        let out = run_step(&step);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "before\n");
    }

    #[test]
    fn missing_overlong_and_malformed_outputs_are_named() {
        let missing = step_with_outputs(&["echo A=1 >> \"$ECS_AMI_OUTPUTS\""], &["A", "B"]);
        let out = run_step(&missing);
        assert!(out.status.success());
        let problem = read_outputs(&missing, &String::from_utf8(out.stdout).unwrap()).unwrap_err();
        assert!(
            problem.contains("declares output \"B\" but did not write"),
            "{problem}"
        );

        let long = step_with_outputs(&["printf 'A=%0300d\\n' 0 >> \"$ECS_AMI_OUTPUTS\""], &["A"]);
        let out = run_step(&long);
        let problem = read_outputs(&long, &String::from_utf8(out.stdout).unwrap()).unwrap_err();
        assert!(
            problem.contains("300 characters, more than the 256"),
            "{problem}"
        );

        let malformed = step_with_outputs(&["echo oops >> \"$ECS_AMI_OUTPUTS\""], &["A"]);
        let out = run_step(&malformed);
        let problem =
            read_outputs(&malformed, &String::from_utf8(out.stdout).unwrap()).unwrap_err();
        assert!(
            problem.contains("each line must be NAME=value"),
            "{problem}"
        );

        let problem = read_outputs(&malformed, "no marker here\n").unwrap_err();
        assert!(problem.contains("outputs line is missing"), "{problem}");
    }

    #[test]
    fn environment_values_are_quoted_and_failures_stop_the_step() {
        let mut environment = BTreeMap::new();
        environment.insert("GREETING".into(), "it's $not expanded; `nor this`".into());
        let step = Step {
            name: "cmd".into(),
            timeout_seconds: 60,
            outputs: Vec::new(),
            action: Action::Command {
                commands: vec![
                    "echo \"$GREETING\"".into(),
                    "false".into(),
                    "echo unreachable".into(),
                ],
                environment,
            },
        };
        let out = Command::new("bash")
            .arg("-c")
            .arg(render(&step))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout, "it's $not expanded; `nor this`\n");
    }
}
