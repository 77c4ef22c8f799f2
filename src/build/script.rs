//! Turns a step into the shell script that AWS-RunShellScript runs on the builder.
//!
//! File content travels base64-encoded inside a quoted here-document, so that any byte sequence
//! (quotes, `$`, backslashes, a line that reads `EOF`) arrives unchanged and nothing in it is ever
//! interpreted by the shell.

use base64::Engine;

use crate::cfn::properties::{Action, Step};

/// The script for one step. Commands run with `set -e`, as Packer's shell provisioner does, so a
/// failing command fails the step instead of being hidden by the ones after it.
pub fn render(step: &Step) -> String {
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

    #[test]
    fn environment_values_are_quoted_and_failures_stop_the_step() {
        let mut environment = BTreeMap::new();
        environment.insert("GREETING".into(), "it's $not expanded; `nor this`".into());
        let step = Step {
            name: "cmd".into(),
            timeout_seconds: 60,
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
