"""Reads this project's CloudFormation templates for the tests: loads them (short-form tags
included, through cfn-lint's loader), resolves the intrinsic functions they use for given
parameters, and finds every shell script in them.

As a command, prints a resource's resolved properties as JSON, which the Rust tests turn into a
CloudFormation event:

    python3 tests/templates/cfn_template.py properties cfn/ecs-ami.yaml Ami \
        --param TimeZone=UTC --import ecs-ami-ServiceToken=arn:...
"""

import argparse
import json
import re
import sys

from cfnlint.decode import cfn_yaml

NO_VALUE = object()
PSEUDO = {
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::URLSuffix": "amazonaws.com",
}


# Regions outside the aws partition: (region prefix, AWS::Partition, AWS::URLSuffix).
PARTITIONS = [("cn-", "aws-cn", "amazonaws.com.cn"), ("us-gov-", "aws-us-gov", "amazonaws.com"),
              ("us-iso-", "aws-iso", "c2s.ic.gov"), ("us-isob-", "aws-iso-b", "sc2s.sgov.gov")]


def load(path):
    return cfn_yaml.load(path)


def function_role_statements(template, resolver):
    """The statements of template.yaml's function role: the function's own Policies (SAM makes
    them into FunctionRole) and every AWS::IAM::Policy attached to FunctionRole."""
    policies = [resolver.resolve(p) for p in template["Resources"]["Function"]["Properties"]["Policies"]]
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": "FunctionRole"} in resource["Properties"]["Roles"]:
            policies.append(resolver.resolve(resource["Properties"]["PolicyDocument"]))
    return [statement for policy in policies for statement in policy["Statement"]]


def role_statements(template, resolver, logical_id):
    """The statements of an AWS::IAM::Role's own inline Policies (its Properties.Policies, which
    an Fn::If may leave out) and of every AWS::IAM::Policy attached to it. Managed policies
    (ManagedPolicyArns) are not in them: see role_managed_policies."""
    properties = template["Resources"][logical_id]["Properties"]
    inline = resolver.resolve(properties.get("Policies", []))
    documents = [p["PolicyDocument"] for p in (inline if isinstance(inline, list) else [])]
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": logical_id} in resource["Properties"]["Roles"]:
            documents.append(resolver.resolve(resource["Properties"]["PolicyDocument"]))
    return [statement for document in documents for statement in document["Statement"]]


def role_managed_policies(template, resolver, logical_id):
    """The ARNs of the managed policies an AWS::IAM::Role attaches (ManagedPolicyArns)."""
    arns = resolver.resolve(template["Resources"][logical_id]["Properties"].get("ManagedPolicyArns", []))
    return arns if isinstance(arns, list) else []


def builder_role_statements(template, resolver):
    """The statements template.yaml writes for BuilderRole, the builder instances' role (its
    managed AmazonSSMManagedInstanceCore aside)."""
    return role_statements(template, resolver, "BuilderRole")


class Resolver:
    """Resolves Ref, Fn::Sub, Fn::If, Fn::Equals, Fn::Not, Fn::ImportValue, Fn::FindInMap,
    Fn::GetAtt (of given attributes), Fn::Split and Fn::Join for a template with given
    parameters and exports. Anything else is an error: a test must not pass on a value it could
    not compute."""

    def __init__(self, template, params=None, imports=None, stack_name="test-stack", attributes=None,
                 region="us-east-1"):
        self.template = template
        # Fn::GetAtt values ("Resource.Attribute": value) the caller knows; others are errors.
        self.attributes = attributes or {}
        self.values = dict(PSEUDO)
        self.values["AWS::StackName"] = stack_name
        # The partition and its DNS suffix follow the region (AWS's pseudo parameters reference).
        partition, suffix = next(((p, s) for prefix, p, s in PARTITIONS if region.startswith(prefix)),
                                 ("aws", "amazonaws.com"))
        self.values.update({"AWS::Region": region, "AWS::Partition": partition, "AWS::URLSuffix": suffix})
        lists = set()
        for name, spec in template.get("Parameters", {}).items():
            if spec.get("Type") == "CommaDelimitedList":
                lists.add(name)
            if "Default" in spec:
                self.values[name] = str(spec["Default"])
        self.values.update(params or {})
        for name in lists & set(self.values):
            self.values[name] = self.values[name].split(",")
        self.imports = imports or {}
        self.conditions = {}
        for name, expression in template.get("Conditions", {}).items():
            self.conditions[name] = self.resolve(expression)

    def resolve(self, node):
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                if arg == "AWS::NoValue":
                    return NO_VALUE
                if arg not in self.values:
                    raise KeyError(f"Ref {arg}: no such parameter here")
                return self.values[arg]
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return self.sub(text, extra)
            if key == "Fn::If":
                name, then, otherwise = arg
                return self.resolve(then if self.conditions[name] else otherwise)
            if key == "Fn::Equals":
                left, right = self.resolve(arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Condition":
                return self.conditions[arg]
            if key == "Fn::ImportValue":
                name = self.resolve(arg)
                if name not in self.imports:
                    raise KeyError(f"Fn::ImportValue {name}: not given")
                return self.imports[name]
            if key == "Fn::FindInMap":
                table, first, second = self.resolve(arg)
                return self.template["Mappings"][table][first][second]
            if key == "Fn::GetAtt":
                name = ".".join(arg) if isinstance(arg, list) else arg
                if name not in self.attributes:
                    raise KeyError(f"Fn::GetAtt {name}: not given")
                return self.attributes[name]
            if key == "Fn::Split":
                separator, text = self.resolve(arg)
                return text.split(separator)
            if key == "Fn::Join":
                separator, items = arg
                return separator.join(str(i) for i in self.resolve(items))
            if key.startswith("Fn::") or key == "Ref":
                raise KeyError(f"{key} is not resolved by tests/templates/cfn_template.py")
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def sub(self, text, extra):
        def replace(match):
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in extra:
                return str(extra[name])
            if name in self.values:
                return str(self.values[name])
            if name in self.attributes:
                return str(self.attributes[name])
            raise KeyError(f"Fn::Sub ${{{name}}}: no such parameter here")

        return re.sub(r"\$\{([^}]+)\}", replace, text)


def placeholders(text):
    """A Fn::Sub string as a shell script: ${Name} references become a placeholder word and
    ${!x} the shell's ${x}, so that shellcheck sees what the instance will run."""
    def replace(match):
        name = match.group(1)
        return "${" + name[1:] + "}" if name.startswith("!") else "CFN_" + re.sub(r"\W", "_", name)

    return re.sub(r"\$\{([^}]+)\}", replace, text)


def shell_scripts(template):
    """(where, script) for every shell script in a template: each command step of a
    Custom::EcsAmi (as the product runs it: bash with set -e and its Environment), each file step
    whose content starts with a shell #!, and each launch template's user data."""
    found = []
    for logical_id, resource in template.get("Resources", {}).items():
        kind = resource.get("Type", "")
        properties = resource.get("Properties", {})
        if kind == "Custom::EcsAmi":
            for step in properties.get("Steps", []):
                where = f"{logical_id}.Steps[{step['Name']}]"
                if "Commands" in step:
                    lines = ["#!/bin/bash", "set -e"]
                    if step.get("Outputs"):
                        lines.append('ECS_AMI_OUTPUTS="$(mktemp)"')
                    for name in step.get("Environment", {}):
                        lines.append(f"{name}=value")
                    lines.extend(step["Commands"])
                    found.append((where, "\n".join(lines) + "\n"))
                elif re.match(r"#!\s*/(usr/)?bin/(env )?(ba)?sh", str(step.get("Content", ""))):
                    found.append((where, step["Content"]))
        if kind == "AWS::EC2::LaunchTemplate":
            user_data = properties.get("LaunchTemplateData", {}).get("UserData")
            if user_data is not None:
                body = user_data.get("Fn::Base64", user_data)
                if isinstance(body, dict) and "Fn::Sub" in body:
                    sub = body["Fn::Sub"]
                    body = sub if isinstance(sub, str) else sub[0]
                found.append((f"{logical_id}.UserData", placeholders(body)))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    properties = commands.add_parser("properties", help="a resource's resolved properties as JSON")
    properties.add_argument("template")
    properties.add_argument("resource")
    properties.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    properties.add_argument("--import", dest="imports", action="append", default=[], metavar="NAME=VALUE")
    properties.add_argument("--stack-name", default="test-stack")
    as_json = commands.add_parser("json", help="the whole template as JSON, as CloudFormation hands it to a macro")
    as_json.add_argument("template")
    args = parser.parse_args()
    if args.command == "json":
        json.dump(load(args.template), sys.stdout, indent=2)
        print()
        return
    pairs = lambda items: dict(item.split("=", 1) for item in items)
    template = load(args.template)
    resolver = Resolver(template, pairs(args.param), pairs(args.imports), args.stack_name)
    resource = template["Resources"][args.resource]
    json.dump(resolver.resolve(resource.get("Properties", {})), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
