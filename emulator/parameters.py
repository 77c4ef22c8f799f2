"""Parameter Store's `aws:ec2:image` data type: a value is validated as an image of the region after
PutParameter answered, as AWS does."""

from __future__ import annotations

import threading
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ssm.models import ssm_backends

from run_command import SsmError
from settings import IMAGE_PARAMETER_DELAY


def put_image_parameter(region: str, body: dict[str, Any]) -> dict[str, Any]:
    """PutParameter with data type aws:ec2:image, as Parameter Store does it
    (https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-ec2-aliases.html):
    it answers at once with the version it would create, then validates the value
    (IMAGE_PARAMETER_DELAY later) and creates that version only if the value is an available AMI
    of the account's region; otherwise the parameter keeps what it held. A parameter cannot change
    to or from this data type (parameter-store-data-types.html)."""
    ssm = ssm_backends[DEFAULT_ACCOUNT_ID][region]
    name, value = body.get("Name", ""), body.get("Value", "")
    versions = ssm._parameters.get(name) or []
    if versions:
        if not body.get("Overwrite"):
            raise SsmError("ParameterAlreadyExists", "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.")
        if versions[-1].data_type != "aws:ec2:image":
            raise SsmError("ValidationException", f"The data type of parameter {name} can't be changed to aws:ec2:image.")

    def validate() -> None:
        ami = ec2_backends[DEFAULT_ACCOUNT_ID][region].amis.get(value)
        if ami is None or ami.state != "available":
            print(f"parameter {name}: {value} is not an available image; not created or updated", flush=True)
            return
        ssm.put_parameter(name=name, description=body.get("Description"), value=value,
                          parameter_type="String", allowed_pattern=None, keyid=None, overwrite=True,
                          tags=None, data_type="aws:ec2:image", tier=None, policies=None)

    timer = threading.Timer(IMAGE_PARAMETER_DELAY, validate)
    timer.daemon = True
    timer.start()
    return {"Version": (versions[-1].version if versions else 0) + 1, "Tier": "Standard"}
