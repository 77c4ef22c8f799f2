"""The local AWS's Run Command refuses what SSM refuses: AWS-RunShellScript's executionTimeout
parameter takes 1 to 172800 seconds (the document's allowedPattern; its default is 3600), so a
step's TimeoutSeconds, which the build sends as it, must stay inside it (the function's limit is
43200, twelve hours)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "emulator"))

import run_command  # noqa: E402


def test_execution_timeouts_ssm_takes_are_taken():
    assert run_command.execution_timeout({}) == 3600
    assert run_command.execution_timeout({"executionTimeout": ["43200"]}) == 43200
    assert run_command.execution_timeout({"executionTimeout": ["172800"]}) == 172800


@pytest.mark.parametrize("given", ["0", "172801", "ten", "-5"])
def test_execution_timeouts_ssm_refuses_are_refused(given):
    with pytest.raises(run_command.SsmError) as refused:
        run_command.execution_timeout({"executionTimeout": [given]})
    assert refused.value.code == "InvalidParameters"
