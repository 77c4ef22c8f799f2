"""The local AWS's settings: the delays and windows it reproduces AWS's behaviour with, and where
it keeps its state, each from its ECS_AMI_EMULATOR_* environment variable (read once, at import)."""

from __future__ import annotations

import os
import tempfile

STDOUT_LIMIT = 24_000
STDERR_LIMIT = 8_000
LIST_OUTPUT_LIMIT = 2_500
PLUGIN = "aws:runShellScript"

ONLINE_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_ONLINE_DELAY", "1"))
# How long Parameter Store takes to validate an aws:ec2:image value after PutParameter answered.
IMAGE_PARAMETER_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_IMAGE_PARAMETER_DELAY", "1"))
IMAGE_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_IMAGE_DELAY", "0"))
# How long an image made by CopyImage stays `pending` (a cross-region copy takes minutes on AWS).
COPY_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_COPY_DELAY", "2"))
# Eventual consistency: for this long after RunInstances (CreateImage), a request naming the new
# instance (image) answers InvalidInstanceID.NotFound (InvalidAMIID.NotFound).
CONSISTENCY_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_CONSISTENCY_DELAY", "2"))
# The function's filtered Describe and List calls are answered in pages of this many items, the
# first page always empty and carrying a token, as AWS may answer a filtered call
# (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-pagination.html,
# https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeInstanceInformation.html,
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListContainerInstances.html).
# 0: no pages.
PAGE_SIZE = int(os.environ.get("ECS_AMI_EMULATOR_PAGE_SIZE", "1"))
PAGE_TOKEN = "ecs-ami-local-page-"
# For this long after DeregisterImage, DeleteSnapshot of its snapshots answers InvalidSnapshot.InUse.
SNAPSHOT_RELEASE_DELAY = float(os.environ.get("ECS_AMI_EMULATOR_SNAPSHOT_RELEASE_DELAY", "2"))
STATE_DIR = os.environ.get("ECS_AMI_EMULATOR_STATE") or tempfile.mkdtemp(prefix="ecs-ami-local-aws-")
SEED_REGIONS = os.environ.get("ECS_AMI_EMULATOR_REGIONS", "us-east-1").split(",")
BUILDER_PROFILE = os.environ.get("ECS_AMI_EMULATOR_PROFILE", "ecs-ami-builder")
TEST_PROFILE = "ecs-ami-test-instance"
# IAM authorization of the function's calls against template.yaml's role (emulator/authorization.py):
# on unless set to "off".
IAM = os.environ.get("ECS_AMI_EMULATOR_IAM", "on") != "off"
# The template whose role is enforced (another one, such as an older version, for comparison).
TEMPLATE = os.environ.get("ECS_AMI_EMULATOR_TEMPLATE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "template.yaml")
