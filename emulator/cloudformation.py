"""CloudFormation templates may use a short-form function over a mapping or a list (`!Base64` over
`Fn::Sub: [...]`, `!ImportValue` over `Fn::Sub: ...`), as CloudFormation allows: moto's YAML
loader returns such a node unconverted and then fails on it (patched in patches.py)."""

from __future__ import annotations

from typing import Any

import yaml


def short_form_function(loader: Any, tag: str, node: Any) -> Any:
    """`!Name value` as `{"Fn::Name": value}` (`!Ref` as `{"Ref": value}`), for scalar, list and
    mapping values alike; moto's own version leaves a mapping as a raw YAML node."""
    key = "Ref" if tag == "!Ref" else f"Fn::{tag[1:]}"
    if isinstance(node, yaml.MappingNode):
        return {key: loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.SequenceNode):
        return {key: loader.construct_sequence(node, deep=True)}
    if tag == "!GetAtt":
        return {key: node.value.split(".", 1)}
    return {key: node.value}
