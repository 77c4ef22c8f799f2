"""SSM Run Command, which moto does not run: DescribeInstanceInformation (an instance is Online once
it has run for a moment and booted), SendCommand running each command with bash inside the
instance's own file system, GetCommandInvocation, ListCommandInvocations, ListCommands and
CancelCommand with SSM's statuses and output limits, and agents taken offline."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from boot import BOOTING
from filesystems import instance_env, instance_process
from launches import ec2_instance
from settings import LIST_OUTPUT_LIMIT, ONLINE_DELAY, PLUGIN, STDERR_LIMIT, STDOUT_LIMIT


class SsmError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def now_epoch() -> float:
    return time.time()


OFFLINE: set[str] = set()


def is_online(instance) -> bool:
    if instance is None or instance.state != "running" or instance.id in OFFLINE:
        return False
    if instance.id in BOOTING:
        return False
    started = instance.launch_time
    if isinstance(started, str):
        started = datetime.fromisoformat(started.replace("Z", "+00:00"))
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - started).total_seconds() >= ONLINE_DELAY


class Invocation:
    """One instance's run of one command: a bash process in the instance's own root view."""

    def __init__(self, command: "Command", instance_id: str):
        self.command = command
        self.instance_id = instance_id
        self.status = "Pending"
        self.status_details = "Pending"
        self.response_code = -1
        self.stdout = ""
        self.stderr = ""
        self.started: float | None = None
        self.ended: float | None = None
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        # The agent went offline: the command was killed and its end is never reported.
        self.lost = False
        self.lock = threading.Lock()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.process is not None and self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            elif self.status in ("Pending", "InProgress"):
                self.finish("Cancelled", "Cancelled", -1)

    def lose(self) -> None:
        with self.lock:
            self.lost = True
            if self.process is not None and self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)

    def finish(self, status: str, details: str, code: int) -> None:
        self.status = status
        self.status_details = details
        self.response_code = code
        self.ended = now_epoch()

    def run(self) -> None:
        script_dir = os.path.join(
            "var/lib/amazon/ssm", self.instance_id, "document/orchestration", self.command.id
        )
        env = {
            "AWS_SSM_INSTANCE_ID": self.instance_id,
            "AWS_SSM_REGION_NAME": self.command.region,
            **instance_env(self.instance_id, self.command.region),
        }
        with self.lock:
            if self.cancelled:
                return
            self.status = self.status_details = "InProgress"
            self.started = now_epoch()
            self.process = instance_process(
                self.instance_id, "\n".join(self.command.commands) + "\n", script_dir, env,
                workdir=self.command.working_directory or "/", stderr=subprocess.PIPE,
            )
        try:
            out, err = self.process.communicate(timeout=self.command.execution_timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            out, err = self.process.communicate()
            timed_out = True
        with self.lock:
            if self.lost:
                return
            self.stdout = out.decode("utf-8", "replace")[:STDOUT_LIMIT]
            self.stderr = err.decode("utf-8", "replace")[:STDERR_LIMIT]
            code = self.process.returncode
            if self.cancelled:
                self.finish("Cancelled", "Cancelled", -1)
            elif timed_out:
                self.finish("TimedOut", "ExecutionTimedOut", 124)
            elif code == 0:
                self.finish("Success", "Success", 0)
            else:
                self.finish("Failed", "Failed", code if code > 0 else 128 - code)

    def describe(self) -> dict[str, Any]:
        with self.lock:
            elapsed = ""
            if self.started is not None:
                seconds = (self.ended or now_epoch()) - self.started
                elapsed = time.strftime("PT%H:%M:%S", time.gmtime(seconds))
            return {
                "CommandId": self.command.id,
                "InstanceId": self.instance_id,
                "Comment": self.command.comment,
                "DocumentName": self.command.document,
                "DocumentVersion": "$DEFAULT",
                "PluginName": PLUGIN,
                "ResponseCode": self.response_code,
                "ExecutionStartDateTime": iso(self.started),
                "ExecutionElapsedTime": elapsed,
                "ExecutionEndDateTime": iso(self.ended),
                "Status": self.status,
                "StatusDetails": self.status_details,
                "StandardOutputContent": self.stdout,
                "StandardOutputUrl": "",
                "StandardErrorContent": self.stderr,
                "StandardErrorUrl": "",
            }


def iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# AWS-RunShellScript's executionTimeout: its default, and the most its allowedPattern takes (48 h).
DEFAULT_EXECUTION_TIMEOUT = 3600
MAX_EXECUTION_TIMEOUT = 172800


def execution_timeout(parameters: dict[str, Any]) -> int:
    """The command's executionTimeout, refused as SSM refuses a value AWS-RunShellScript's
    parameter pattern does not match (1 to 172800 seconds)."""
    given = (parameters.get("executionTimeout") or [str(DEFAULT_EXECUTION_TIMEOUT)])[0]
    if not (given.isdigit() and 1 <= int(given) <= MAX_EXECUTION_TIMEOUT):
        raise SsmError("InvalidParameters", f"Parameter \"executionTimeout\" value \"{given}\" is not 1 to {MAX_EXECUTION_TIMEOUT} seconds")
    return int(given)


class Command:
    def __init__(self, region: str, body: dict[str, Any]):
        parameters = body.get("Parameters") or {}
        self.id = str(uuid.uuid4())
        self.region = region
        self.document = body.get("DocumentName", "")
        self.comment = body.get("Comment", "")
        self.parameters = parameters
        self.commands = list(parameters.get("commands") or [])
        self.working_directory = (parameters.get("workingDirectory") or [""])[0]
        self.execution_timeout = execution_timeout(parameters)
        self.requested = now_epoch()
        self.invocations: dict[str, Invocation] = {}

    def status(self) -> str:
        states = {inv.status for inv in self.invocations.values()}
        for state in ("InProgress", "Pending"):
            if state in states:
                return "InProgress" if state == "InProgress" or len(states) > 1 else "Pending"
        if states == {"Success"}:
            return "Success"
        if "Cancelled" in states:
            return "Cancelled"
        if "TimedOut" in states:
            return "TimedOut"
        return "Failed"

    def describe(self) -> dict[str, Any]:
        return {
            "CommandId": self.id,
            "DocumentName": self.document,
            "DocumentVersion": "$DEFAULT",
            "Comment": self.comment,
            "Parameters": self.parameters,
            "InstanceIds": list(self.invocations),
            "Targets": [],
            "RequestedDateTime": self.requested,
            "Status": self.status(),
            "StatusDetails": self.status(),
            "TargetCount": len(self.invocations),
            "CompletedCount": sum(
                1 for i in self.invocations.values() if i.status not in ("Pending", "InProgress")
            ),
            "ErrorCount": sum(
                1 for i in self.invocations.values() if i.status in ("Failed", "TimedOut")
            ),
            "TimeoutSeconds": self.execution_timeout,
        }


class RunCommandService:
    """The SSM operations moto lacks, keyed on the X-Amz-Target header."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self.lock = threading.Lock()

    def handle(self, operation: str, region: str, body: dict[str, Any]) -> dict[str, Any] | None:
        handler = getattr(self, "op_" + operation, None)
        return handler(region, body) if handler else None

    def op_DescribeInstanceInformation(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        wanted: set[str] | None = None
        for item in body.get("InstanceInformationFilterList") or []:
            if item.get("key") == "InstanceIds":
                wanted = set(item.get("valueSet") or [])
        for item in body.get("Filters") or []:
            if item.get("Key") == "InstanceIds":
                wanted = set(item.get("Values") or [])
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
        listed = []
        for instance in backend.all_instances():
            if wanted is not None and instance.id not in wanted:
                continue
            if instance.id in OFFLINE and instance.state == "running":
                ping = "ConnectionLost"
            elif is_online(instance):
                ping = "Online"
            else:
                continue
            listed.append(
                {
                    "InstanceId": instance.id,
                    "PingStatus": ping,
                    "LastPingDateTime": now_epoch(),
                    "AgentVersion": "3.3.0.0",
                    "IsLatestVersion": True,
                    "PlatformType": "Linux",
                    "PlatformName": "Amazon Linux",
                    "PlatformVersion": "2023",
                    "ResourceType": "EC2Instance",
                    "IPAddress": instance.private_ip,
                    "ComputerName": f"ip-{instance.private_ip.replace('.', '-')}.ec2.internal",
                }
            )
        return {"InstanceInformationList": listed}

    def op_SendCommand(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("DocumentName") != "AWS-RunShellScript":
            raise SsmError(
                "InvalidDocument", "the local AWS runs only the AWS-RunShellScript document"
            )
        instance_ids = body.get("InstanceIds") or []
        if not instance_ids:
            raise SsmError("ValidationException", "InstanceIds is required by the local AWS")
        for instance_id in instance_ids:
            if not is_online(ec2_instance(region, instance_id)):
                raise SsmError("InvalidInstanceId", f"Instances [[{instance_id}]] not in a valid state for account {DEFAULT_ACCOUNT_ID}")
        command = Command(region, body)
        for instance_id in instance_ids:
            invocation = Invocation(command, instance_id)
            command.invocations[instance_id] = invocation
            threading.Thread(target=invocation.run, daemon=True).start()
        with self.lock:
            self.commands[command.id] = command
        return {"Command": command.describe()}

    def find(self, command_id: str) -> Command:
        with self.lock:
            command = self.commands.get(command_id)
        if command is None:
            raise SsmError("InvalidCommandId", f"command {command_id} does not exist")
        return command

    def op_GetCommandInvocation(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            command = self.commands.get(body.get("CommandId", ""))
        invocation = command.invocations.get(body.get("InstanceId", "")) if command else None
        if invocation is None:
            raise SsmError("InvocationDoesNotExist", "")
        return invocation.describe()

    def op_ListCommandInvocations(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            commands = list(self.commands.values())
        if body.get("CommandId"):
            commands = [self.find(body["CommandId"])]
        listed = []
        for command in commands:
            for instance_id, invocation in command.invocations.items():
                if body.get("InstanceId") and body["InstanceId"] != instance_id:
                    continue
                detail = invocation.describe()
                entry = {
                    "CommandId": command.id,
                    "InstanceId": instance_id,
                    "Comment": command.comment,
                    "DocumentName": command.document,
                    "RequestedDateTime": command.requested,
                    "Status": detail["Status"],
                    "StatusDetails": detail["StatusDetails"],
                    "StandardOutputUrl": "",
                    "StandardErrorUrl": "",
                    "CommandPlugins": [],
                }
                if body.get("Details"):
                    entry["CommandPlugins"] = [
                        {
                            "Name": PLUGIN,
                            "Status": detail["Status"],
                            "StatusDetails": detail["StatusDetails"],
                            "ResponseCode": detail["ResponseCode"],
                            "Output": (detail["StandardOutputContent"] + detail["StandardErrorContent"])[:LIST_OUTPUT_LIMIT],
                        }
                    ]
                listed.append(entry)
        return {"CommandInvocations": listed}

    def op_ListCommands(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            commands = list(self.commands.values())
        if body.get("CommandId"):
            commands = [self.find(body["CommandId"])]
        if body.get("InstanceId"):
            commands = [c for c in commands if body["InstanceId"] in c.invocations]
        return {"Commands": [c.describe() for c in commands]}

    def op_CancelCommand(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        command = self.find(body.get("CommandId", ""))
        targets = body.get("InstanceIds") or list(command.invocations)
        for instance_id in targets:
            invocation = command.invocations.get(instance_id)
            if invocation is not None:
                invocation.cancel()
        return {}


    def take_offline(self, instance_id: str) -> None:
        OFFLINE.add(instance_id)
        with self.lock:
            commands = list(self.commands.values())
        for command in commands:
            invocation = command.invocations.get(instance_id)
            if invocation is not None and invocation.status in ("Pending", "InProgress"):
                invocation.lose()
