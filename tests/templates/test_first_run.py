"""The first-run script of cfn/ecs-ami.yaml, run as an instance would run it, with stand-ins for
the system commands it calls (systemctl, curl, dmesg, the CloudWatch agent's control tool,
sleep) and ECS_FIRST_RUN_ROOT standing for /. Each stand-in records its arguments."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from cfn_template import load

REPO = Path(__file__).resolve().parents[2]


def first_run_script():
    template = load(str(REPO / "cfn/ecs-ami.yaml"))
    steps = template["Resources"]["Ami"]["Properties"]["Steps"]
    (step,) = [s for s in steps if s.get("Path") == "/usr/local/bin/ecs-first-run"]
    assert step["Mode"] == "0755"
    return step["Content"]


STANDINS = {
    # Records its arguments; answers the ECS agent's introspection API from a file of answers,
    # one per call (the last one repeats); fails like `curl -f` when an answer is "refused".
    "curl": """
echo "$*" >> "$CALLS/curl"
n=$(wc -l < "$CALLS/curl")
answer=$(sed -n "${n}p" "$ANSWERS"); [ -n "$answer" ] || answer=$(tail -n 1 "$ANSWERS")
[ "$answer" = refused ] && exit 7
printf '%s' "$answer"
""",
    "systemctl": 'echo "$*" >> "$CALLS/systemctl"',
    "amazon-cloudwatch-agent-ctl": 'echo "$*" >> "$CALLS/cwagent"',
    "dmesg": 'echo "[    0.000000] Linux version 6.1 (stand-in)"',
    "sleep": 'echo "$*" >> "$CALLS/sleep"',
}


class Instance:
    def __init__(self, tmp_path):
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.calls = tmp_path / "calls"
        self.calls.mkdir()
        self.answers = tmp_path / "answers"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, body in STANDINS.items():
            path = bin_dir / name
            path.write_text("#!/bin/bash\n" + body.lstrip())
            path.chmod(path.stat().st_mode | stat.S_IEXEC)
        self.script = tmp_path / "ecs-first-run"
        self.script.write_text(first_run_script())
        self.script.chmod(0o755)
        self.path = f"{bin_dir}:{os.environ['PATH']}"

    def agent_answers(self, *answers):
        self.answers.write_text("".join(a + "\n" for a in answers))

    def run(self, *args, env=None):
        environment = {
            "PATH": self.path,
            "ECS_FIRST_RUN_ROOT": str(self.root),
            "CALLS": str(self.calls),
            "ANSWERS": str(self.answers),
        }
        environment.update(env or {})
        return subprocess.run(
            [str(self.script), *args], env=environment, capture_output=True, text=True, timeout=60
        )

    def file(self, path):
        target = self.root / path.lstrip("/")
        return target.read_text() if target.exists() else None

    def calls_of(self, name):
        target = self.calls / name
        return target.read_text().splitlines() if target.exists() else []


STANDARD = ["--cluster", "prod", "--stack", "web", "--group", "web-ecs", "--region", "eu-west-1"]
JOINED = '{"Cluster":"prod","ContainerInstanceArn":"arn:aws:ecs:eu-west-1:1:container-instance/prod/abc","Version":"Amazon ECS Agent - v1.89.2"}'


@pytest.fixture
def instance(tmp_path):
    created = Instance(tmp_path)
    created.agent_answers(JOINED)
    return created


def test_without_a_proxy_joins_the_cluster_ships_logs_and_starts_services(instance):
    result = instance.run(*STANDARD)
    assert result.returncode == 0, result.stderr
    assert "joined cluster prod" in result.stderr
    assert instance.file("/etc/ecs/ecs.config") == "ECS_CLUSTER=prod\n"
    for dropin in ["/etc/systemd/system/docker.service.d/http-proxy.conf",
                   "/etc/systemd/system/ecs.service.d/http-proxy.conf",
                   "/opt/aws/amazon-cloudwatch-agent/etc/common-config.toml"]:
        assert instance.file(dropin) is None, dropin
    config = json.loads(instance.file("/opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json"))
    files = config["logs"]["logs_collected"]["files"]["collect_list"]
    assert [(f["file_path"], f["log_group_name"], f["log_stream_name"]) for f in files] == [
        (path, f"/web/ec2/web-ecs{path}", "{instance_id}")
        for path in ["/var/log/dmesg", "/var/log/messages", "/var/log/docker",
                     "/var/log/ecs/ecs-init.log", "/var/log/ecs/ecs-agent.log", "/var/log/ecs/audit.log"]
    ]
    assert "Linux version" in instance.file("/var/log/dmesg")
    systemctl = instance.calls_of("systemctl")
    assert "enable --now docker.service" in systemctl
    # Waiting for ecs.service from user data would hang the boot: it starts after cloud-init.
    assert "start --no-block ecs.service" in systemctl
    assert instance.calls_of("cwagent") == [
        f"-a fetch-config -m ec2 -s -c file:{instance.root}/opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json"
    ]
    assert instance.calls_of("curl") == ["-fsS --max-time 5 http://localhost:51678/v1/metadata"]


def test_with_a_proxy_configures_docker_the_agent_and_the_cloudwatch_agent(instance):
    result = instance.run(*STANDARD, "--proxy", "http://proxy.internal:3128")
    assert result.returncode == 0, result.stderr
    assert instance.file("/etc/ecs/ecs.config") == (
        "ECS_CLUSTER=prod\n"
        "HTTP_PROXY=http://proxy.internal:3128\n"
        "NO_PROXY=169.254.169.254,169.254.170.2,/var/run/docker.sock\n"
    )
    assert instance.file("/etc/systemd/system/docker.service.d/http-proxy.conf") == (
        "[Service]\n"
        'Environment="HTTP_PROXY=http://proxy.internal:3128" "HTTPS_PROXY=http://proxy.internal:3128" '
        '"NO_PROXY=169.254.169.254,169.254.170.2"\n'
    )
    assert instance.file("/etc/systemd/system/ecs.service.d/http-proxy.conf") == (
        "[Service]\n"
        'Environment="HTTP_PROXY=http://proxy.internal:3128" '
        '"NO_PROXY=169.254.169.254,169.254.170.2,/var/run/docker.sock"\n'
    )
    toml = instance.file("/opt/aws/amazon-cloudwatch-agent/etc/common-config.toml")
    assert 'http_proxy = "http://proxy.internal:3128"' in toml
    assert 'https_proxy = "http://proxy.internal:3128"' in toml
    assert 'no_proxy = "169.254.169.254,169.254.170.2"' in toml
    # The drop-ins are read only after a daemon-reload, before the services start.
    systemctl = instance.calls_of("systemctl")
    assert systemctl.index("daemon-reload") < systemctl.index("enable --now docker.service")


def test_an_empty_proxy_url_means_no_proxy(instance):
    # The classic mistake, an unquoted [ -n $PROXY_URL ], would configure a proxy here.
    result = instance.run(*STANDARD, env={"PROXY_URL": ""})
    assert result.returncode == 0, result.stderr
    assert instance.file("/etc/ecs/ecs.config") == "ECS_CLUSTER=prod\n"
    assert instance.file("/etc/systemd/system/docker.service.d/http-proxy.conf") is None


def test_settings_come_from_the_environment_too(instance):
    result = instance.run(env={"ECS_CLUSTER": "prod", "STACK_NAME": "web", "ASG_NAME": "web-ecs",
                               "AWS_REGION": "eu-west-1", "PROXY_URL": "https://proxy:8443"})
    assert result.returncode == 0, result.stderr
    assert "HTTP_PROXY=https://proxy:8443" in instance.file("/etc/ecs/ecs.config")


def test_running_again_converges_and_dropping_the_proxy_removes_it(instance):
    instance.root.joinpath("etc/ecs").mkdir(parents=True)
    # A setting the image or user data put there before stays.
    instance.root.joinpath("etc/ecs/ecs.config").write_text("ECS_ENABLE_TASK_IAM_ROLE=true\nECS_CLUSTER=default\n")
    assert instance.run(*STANDARD, "--proxy", "http://proxy:3128").returncode == 0
    first = instance.file("/etc/ecs/ecs.config")
    assert instance.run(*STANDARD, "--proxy", "http://proxy:3128").returncode == 0
    assert instance.file("/etc/ecs/ecs.config") == first
    assert first.count("ECS_CLUSTER=") == 1 and "ECS_ENABLE_TASK_IAM_ROLE=true" in first
    assert instance.run(*STANDARD).returncode == 0
    assert instance.file("/etc/ecs/ecs.config") == "ECS_ENABLE_TASK_IAM_ROLE=true\nECS_CLUSTER=prod\n"
    assert instance.file("/etc/systemd/system/ecs.service.d/http-proxy.conf") is None
    assert instance.file("/opt/aws/amazon-cloudwatch-agent/etc/common-config.toml") is None


def test_the_health_check_waits_for_the_agent(instance):
    instance.agent_answers("refused", "refused", '{"Cluster":"","Version":"starting"}', JOINED)
    result = instance.run(*STANDARD, "--wait", "60")
    assert result.returncode == 0, result.stderr
    assert len(instance.calls_of("curl")) == 4
    assert instance.calls_of("sleep") == ["5", "5", "5"]


def test_wait_0_configures_and_starts_without_waiting(instance):
    # From user data: the ECS agent starts only once cloud-init is done, so no wait there.
    instance.agent_answers("refused")
    result = instance.run(*STANDARD, "--wait", "0")
    assert result.returncode == 0, result.stderr
    assert "not waiting for the ECS agent" in result.stderr
    assert instance.calls_of("curl") == []
    assert instance.file("/etc/ecs/ecs.config").endswith("ECS_CLUSTER=prod\n")


def test_the_health_check_gives_up_with_a_non_zero_exit(instance):
    instance.agent_answers('{"Cluster":"other","Version":"v1"}')
    result = instance.run(*STANDARD, "--wait", "15")
    assert result.returncode == 1
    assert "did not report cluster prod within 15 s" in result.stderr
    assert '"Cluster":"other"' in result.stderr
    # 15 s at one look every 5 s: three looks, never more.
    assert len(instance.calls_of("curl")) == 3


def test_an_agent_that_never_answers_fails_too(instance):
    instance.agent_answers("refused")
    result = instance.run(*STANDARD, "--wait", "10")
    assert result.returncode == 1
    assert "its last answer: none" in result.stderr


@pytest.mark.parametrize("args, words", [
    (STANDARD[2:], "--cluster is required"),
    (STANDARD + ["--proxy", "ftp://proxy:21"], "not an http:// or https:// URL"),
    (STANDARD + ["--proxy", 'http://a" b'], "not an http:// or https:// URL"),
    (STANDARD + ["--wait", "soon"], "--wait takes whole seconds"),
    (STANDARD + ["--color"], "--color needs a value"),
    (STANDARD + ["--colour", "red"], "unknown option --colour"),
    (["--cluster", "prod", "--stack", "web stack", "--group", "g", "--region", "eu-west-1"], "--stack web stack has characters"),
])
def test_bad_usage_exits_2_and_says_why(instance, args, words):
    result = instance.run(*args)
    assert result.returncode == 2
    assert words in result.stderr
    assert instance.calls_of("systemctl") == []
