"""A cfn-lint rule for Custom::EcsAmi: its properties checked against Custom-EcsAmi.schema.json
(beside this file), so that a misspelt property, a value out of range or a missing required
property is reported on your machine instead of after a stack operation.

    cfn-lint --append-rules cfn/lint -- template.yaml

cfn-lint checks the properties of every `Custom::*` resource only against CloudFormation's
generic custom resource (ServiceToken, ServiceTimeout), and its `--registry-schemas` are not
applied to `Custom::` types, hence a rule."""

from __future__ import annotations

import json
import os
from typing import Any

from cfnlint.helpers import FUNCTIONS
from cfnlint.jsonschema import ValidationResult, Validator
from cfnlint.rules.jsonschema.CfnLintJsonSchema import CfnLintJsonSchema

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Custom-EcsAmi.schema.json")
RESOURCE_TYPE = "Custom::EcsAmi"


class CustomEcsAmiProperties(CfnLintJsonSchema):
    """Custom::EcsAmi's properties, as the function's parser takes them."""

    id = "E9101"
    shortdesc = "Custom::EcsAmi properties are invalid"
    description = "Checks the properties of Custom::EcsAmi resources against the resource's schema"
    source_url = "docs/reference/Custom-EcsAmi.md (in the Custom::EcsAmi repository)"
    tags = ["resources", "custom"]

    def __init__(self) -> None:
        super().__init__(keywords=["Resources/*"], all_matches=True)
        with open(SCHEMA, encoding="utf-8") as handle:
            self._schema = json.load(handle)
        # Validate against this file's schema, not the one cfn-lint passes for the keyword.
        self._use_schema_arg = False

    def validate(self, validator: Validator, keywords: Any, instance: Any, schema: Any) -> ValidationResult:
        if not isinstance(instance, dict) or instance.get("Type") != RESOURCE_TYPE:
            return
        properties = instance.get("Properties", {})
        # As cfn-lint's own check of resource properties (E3002): intrinsic functions stand for
        # values of the type they resolve to, and, as CloudFormation hands a custom resource its
        # numbers and booleans as strings (the function takes either), "3600" is an integer.
        conditions = {}
        if isinstance(instance.get("Condition"), str):
            conditions = {instance["Condition"]: True}
        validator = validator.evolve(
            context=validator.context.evolve(
                functions=list(FUNCTIONS),
                strict_types=False,
                conditions=validator.context.conditions.evolve(conditions),
            ),
        )
        for error in super().validate(validator, keywords, properties, schema):
            named(error, [])
            error.path.appendleft("Properties")
            yield error


def named(error: Any, parent: list[Any]) -> None:
    """Each message begins with the property as the function's own Reasons name it
    (`Steps[0].Commands: ...`), the errors of each alternative shape (a `oneOf`) included."""
    path = parent + list(error.path)
    if path:
        error.message = f"{property_path(path)}: {error.message}"
    for inner in error.context or []:
        named(inner, path)


def property_path(path: Any) -> str:
    """`["Steps", 0, "Commands"]` as `Steps[0].Commands`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
