"""An instance's first boot: its user data run as cloud-init's scripts-user would, and
GetConsoleOutput answering what it printed."""

from __future__ import annotations

import base64
import html
import json
import os
import threading
from datetime import datetime, timezone
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from filesystems import instance_env, instance_process
from messages import error_response
from settings import STATE_DIR


# User data at boot: instance id -> the console output so far, and the instances still running it.
CONSOLE: dict[str, str] = {}


BOOTING: set[str] = set()


# Instance families on the Xen hypervisor, which have no latest console output.
XEN_FAMILIES = ("t1.", "t2.", "m1.", "m2.", "m3.", "m4.", "c1.", "c3.", "c4.", "r3.", "r4.", "i2.",
                "d2.", "g2.", "g3.", "p2.", "x1.", "x1e.", "h1.")


CONSOLE_BUFFERED: dict[str, str] = {}


def boot(instance_id: str, user_data: bytes) -> None:
    """An instance's first boot runs its user data (a shell script, as cloud-init's
    scripts-user does), in the instance's own file system; what it prints goes to the console
    output (GetConsoleOutput). The instance's SSM agent reports Online only once it has run, a
    simplification: on AWS the agent may come Online first, so a test that depends on the user
    data should wait for it (`cloud-init status --wait`)."""
    BOOTING.add(instance_id)
    CONSOLE[instance_id] = f"[    0.000000] Linux version (local AWS) booting {instance_id}\n"
    # What EC2 posts shortly after the instance starts, and answers without Latest.
    CONSOLE_BUFFERED[instance_id] = CONSOLE[instance_id]

    def run() -> None:
        try:
            text = user_data.decode("utf-8", "replace")
            if not text.startswith("#!"):
                text = "#!/bin/bash\n" + text
            region = next((r for r, b in ec2_backends[DEFAULT_ACCOUNT_ID].items()
                           if any(i.id == instance_id for i in b.all_instances())), "us-east-1")
            process = instance_process(instance_id, text, "var/lib/ecs-ami-local/user-data",
                                       instance_env(instance_id, region))
            out, _ = process.communicate(timeout=600)
            CONSOLE[instance_id] += out.decode("utf-8", "replace")
            CONSOLE[instance_id] += (f"cloud-init: user data finished with exit code {process.returncode}\n")
            # Where cloud-init keeps how its run ended (`cloud-init status` reads it).
            result = os.path.join(STATE_DIR, "instances", instance_id, "upper", "var/lib/cloud/data")
            os.makedirs(result, exist_ok=True)
            errors = [] if process.returncode == 0 else [
                f"scripts-user: user data exited with code {process.returncode}"]
            with open(os.path.join(result, "result.json"), "w") as handle:
                json.dump({"v1": {"datasource": "DataSourceEc2Local", "errors": errors}}, handle)
        except Exception as error:  # noqa: BLE001 (the console says what went wrong)
            CONSOLE[instance_id] += f"cloud-init: user data could not run: {error}\n"
        finally:
            BOOTING.discard(instance_id)

    threading.Thread(target=run, daemon=True).start()


def console_output(start_response: Any, params: dict[str, Any]) -> list[bytes]:
    """GetConsoleOutput: the instance's boot messages and user data output, base64-encoded. With
    `Latest` (Nitro instance types only; others answer UnsupportedOperation) everything so far;
    without it, the buffer EC2 posted shortly after the instance started
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html)."""
    instance_id = params.get("InstanceId", "")
    latest = params.get("Latest", "").lower() == "true"
    if latest:
        instance = next((i for b in ec2_backends[DEFAULT_ACCOUNT_ID].values() for i in b.all_instances()
                         if i.id == instance_id), None)
        if instance is not None and instance.instance_type.startswith(XEN_FAMILIES):
            return error_response(start_response, "EC2.GetConsoleOutput", {
                "code": "UnsupportedOperation", "status": 400,
                "message": "Latest console output is supported only on instance types built on the Nitro System"})
    text = CONSOLE.get(instance_id, "") if latest else CONSOLE_BUFFERED.get(instance_id, "")
    output = base64.b64encode(text.encode()).decode()
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<GetConsoleOutputResponse '
            'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>local</requestId>'
            f"<instanceId>{html.escape(instance_id)}</instanceId>"
            f"<timestamp>{datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.000Z')}</timestamp>"
            f"<output>{output}</output></GetConsoleOutputResponse>")
    start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
    return [body.encode()]
