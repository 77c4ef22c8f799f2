"""Counting the AWS API calls the local AWS receives, by operation and in order
(`GET /ecs-ami-local/calls`)."""

from __future__ import annotations

import json
import threading
from typing import Any


class CallCounter:
    """Counts AWS API calls by operation, so a build's cost in calls can be measured."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        # The calls in the order they came, each with what it named (a parameter, a path), so
        # that what every call of a build is for can be read off (scripts/bench, the tests).
        self.sequence: list[str] = []
        self.lock = threading.Lock()

    def record(self, operation: str, raw: bytes) -> None:
        named = ""
        if operation.startswith("AmazonSSM."):
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            found = body.get("Name") or body.get("Path") or body.get("Names")
            named = f" {found}" if found else ""
        with self.lock:
            self.counts[operation] = self.counts.get(operation, 0) + 1
            self.sequence.append(operation + named)

    def take(self, reset: bool) -> dict[str, Any]:
        with self.lock:
            counts = dict(self.counts)
            sequence = list(self.sequence)
            if reset:
                self.counts.clear()
                self.sequence.clear()
        return {"total": sum(counts.values()), "by_operation": counts, "sequence": sequence}
