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
from cfnlint.jsonschema import ValidationError, ValidationResult, Validator
from cfnlint.rules.jsonschema.CfnLintJsonSchema import CfnLintJsonSchema

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Custom-EcsAmi.schema.json")
RESOURCE_TYPE = "Custom::EcsAmi"
# A resource answers CloudFormation within an hour: TimeoutMinutes over this needs the EcsAmi macro.
MAX_SHORT_BUILD_MINUTES = 55


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
        errors = list(super().validate(validator, keywords, properties, schema))
        errors.extend(long_build_without_macro(validator, properties))
        for error in errors:
            named(error, [])
            error.path.appendleft("Properties")
            yield error


def long_build_without_macro(validator: Validator, properties: Any) -> list[Any]:
    """TimeoutMinutes over 55 (as written, not a function) is a build through a wait condition:
    the template must name a macro in its Transform (the deployment's EcsAmi; a template the macro
    already expanded carries SignalUrl or Signal instead). The schema alone allows up to 710."""
    if not isinstance(properties, dict) or "SignalUrl" in properties or "Signal" in properties:
        return []
    minutes = properties.get("TimeoutMinutes")
    if isinstance(minutes, bool) or not isinstance(minutes, (int, str)) or not str(minutes).strip().isdigit():
        return []
    if int(str(minutes)) <= MAX_SHORT_BUILD_MINUTES:
        return []
    cfn = getattr(validator, "cfn", None)
    transforms = cfn.transform_pre.get("Transform", []) if cfn is not None else []
    if any(not (isinstance(name, str) and name.startswith("AWS::")) for name in transforms):
        return []
    return [ValidationError(
        f"{minutes} minutes needs the deployment's EcsAmi macro in the template's Transform "
        f"(over {MAX_SHORT_BUILD_MINUTES}, the build goes through a wait condition)",
        path=["TimeoutMinutes"])]


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
