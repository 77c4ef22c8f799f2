"""The local AWS's state directory (ECS_AMI_EMULATOR_STATE): made when it does not exist, and a
path that cannot be one refused at start with a message naming it, instead of every authorized
call answering HTTP 500 because its decision cannot be written there."""

import os
import subprocess
import sys
import tempfile
import time

EMULATOR = os.path.join(os.path.dirname(__file__), "..", "..", "emulator", "local_aws.py")


def start(state_dir):
    # IAM off: the IAM engine (Node.js) is not needed to start, and the port file is all this
    # looks for.
    env = dict(os.environ, ECS_AMI_EMULATOR_STATE=state_dir, ECS_AMI_EMULATOR_IAM="off")
    return subprocess.Popen(
        [sys.executable, EMULATOR, "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def test_a_state_directory_that_does_not_exist_is_made():
    with tempfile.TemporaryDirectory() as parent:
        state_dir = os.path.join(parent, "not", "yet")
        local_aws = start(state_dir)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(state_dir, "port")):
                assert local_aws.poll() is None, local_aws.stderr.read()
                assert time.monotonic() < deadline, "the local AWS did not start"
                time.sleep(0.1)
        finally:
            local_aws.terminate()
            local_aws.wait(timeout=30)


def test_a_state_directory_that_cannot_be_made_is_refused_at_start():
    with tempfile.NamedTemporaryFile() as not_a_directory:
        local_aws = start(not_a_directory.name)
        _, stderr = local_aws.communicate(timeout=60)
        assert local_aws.returncode != 0
        assert f"cannot use ECS_AMI_EMULATOR_STATE={not_a_directory.name}" in stderr, stderr
