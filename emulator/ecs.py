"""ECS as container instances see it: an instance's ECS agent starting registers it with the cluster
its /etc/ecs/ecs.config names, and ECS deregisters a terminated instance (installed by
patches.py)."""

from __future__ import annotations

import os
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ecs.models import ecs_backends

from run_command import SsmError
from settings import STATE_DIR


def ecs_agent_started(body: dict[str, Any]) -> dict[str, Any]:
    """POST /ecs-ami-local/ecs/agent-started `{"instance": id}`: the ECS agent of an instance
    started (the stand-in for the service manager in the image calls this on `systemctl start
    ecs`). As the real agent does, it reads ECS_CLUSTER from the instance's /etc/ecs/ecs.config
    (default `default`) and registers the instance there as a container instance, agent
    connected (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-agent-config.html)."""
    instance_id = body["instance"]
    for region, backend in ec2_backends[DEFAULT_ACCOUNT_ID].items():
        if any(i.id == instance_id for i in backend.all_instances()):
            break
    else:
        raise SsmError("InvalidInstanceId", f"no instance {instance_id}")
    config_path = os.path.join(STATE_DIR, "instances", instance_id, "upper", "etc/ecs/ecs.config")
    cluster = "default"
    if os.path.exists(config_path):
        for line in open(config_path, encoding="utf-8", errors="replace"):
            key, _, value = line.strip().partition("=")
            if key == "ECS_CLUSTER" and value:
                cluster = value.strip().strip("'\"")
    ecs = ecs_backends[DEFAULT_ACCOUNT_ID][region]
    if cluster not in ecs.clusters:
        raise SsmError("ClusterNotFoundException", f"cluster {cluster} not found in {region}")
    registered = ecs.register_container_instance(cluster, instance_id)
    return {"cluster": cluster, "containerInstanceArn": registered.container_instance_arn}


def as_ecs_deregisters_terminated_instances(original: Any) -> Any:
    """A terminated container instance is deregistered from its cluster by ECS
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deregister_container_instance.html);
    moto keeps it."""

    def terminate_instances(self: Any, instance_ids: list[str]) -> Any:
        answer = original(self, instance_ids)
        ecs = ecs_backends[DEFAULT_ACCOUNT_ID][self.region_name]
        for cluster, members in list(ecs.container_instances.items()):
            for member_id, member in list(members.items()):
                if member.ec2_instance_id in instance_ids and cluster in ecs.clusters:
                    ecs.deregister_container_instance(cluster, member_id, force=True)
        return answer

    return terminate_instances
