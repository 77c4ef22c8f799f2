"""Faults injected by the tests: errors, stalls and failed images, for chosen operations and
attempts (`POST /ecs-ami-local/faults`)."""

from __future__ import annotations

import fnmatch
import threading
from typing import Any


class Faults:
    """Errors injected into chosen operations, for the fault tests."""

    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []
        self.fired: dict[str, int] = {}
        self.lock = threading.Lock()

    def set(self, rules: list[dict[str, Any]]) -> None:
        with self.lock:
            self.rules = rules
            self.fired = {}

    def report(self) -> dict[str, Any]:
        with self.lock:
            return {"rules": self.rules, "fired": dict(self.fired), "total": sum(self.fired.values())}

    def matching(self, operation: str, attempt: int, kind: str, body: bytes = b"") -> dict[str, Any] | None:
        """A rule may also name text the request's body must contain (`body_contains`), let that
        many matching requests through first (`after`), and fire at most that many times
        (`times`)."""
        with self.lock:
            for rule in self.rules:
                if not fnmatch.fnmatchcase(operation, rule.get("operation", "")):
                    continue
                if kind == "image" and "image" not in rule:
                    continue
                if kind == "error" and "code" not in rule:
                    continue
                if kind == "stall" and "stall" not in rule:
                    continue
                if rule.get("attempts") is not None and attempt not in rule["attempts"]:
                    continue
                if rule.get("body_contains") is not None and rule["body_contains"].encode() not in body:
                    continue
                if rule.get("after", 0) > 0:
                    rule["after"] -= 1
                    continue
                if rule.get("times") is not None:
                    if rule["times"] <= 0:
                        continue
                    rule["times"] -= 1
                self.fired[operation] = self.fired.get(operation, 0) + 1
                return rule
        return None
