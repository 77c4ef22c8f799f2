"""The cfn-lint rule for Custom::EcsAmi (cfn/lint/custom_ecs_ami.py with Custom-EcsAmi.schema.json),
run as its users run it: `cfn-lint --append-rules cfn/lint -- TEMPLATE`. Templates that the
function accepts pass; templates it refuses fail, each error naming the property. (That the schema
says what the function's parser says is src/spec/schema_tests.rs's business.)"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import subprocess

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = REPO / "cfn" / "lint"
SCHEMA = json.loads((RULES / "Custom-EcsAmi.schema.json").read_text())
TOKEN = "arn:aws:lambda:us-east-1:123456789012:function:ecs-ami"


def lint(paths: list[pathlib.Path]) -> list[dict]:
    """cfn-lint's findings of the rule (E9101) and of cfn-lint's own rules, as JSON."""
    run = subprocess.run(["cfn-lint", "--format", "json", "--append-rules", str(RULES), "--", *map(str, paths)],
                         capture_output=True, text=True)
    assert run.returncode in (0, 2, 4, 6, 8, 10, 12, 14), run.stderr
    return json.loads(run.stdout or "[]")


def template(resources: dict[str, dict]) -> dict:
    return {"AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {name: {"Type": "Custom::EcsAmi", "Properties": properties}
                          for name, properties in resources.items()}}


def write(tmp_path: pathlib.Path, document: dict) -> pathlib.Path:
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_the_templates_of_this_repository_pass():
    found = lint([REPO / "template.yaml", *sorted((REPO / "cfn").glob("*.yaml"))])
    assert found == [], json.dumps(found, indent=1)


def test_the_schemas_valid_examples_pass(tmp_path):
    valid = {f"Example{i}": SCHEMA["examples"][i] for i in (0, 2, 3)}
    found = lint([write(tmp_path, template(valid))])
    assert found == [], json.dumps(found, indent=1)


def documented_templates() -> list[tuple[str, str]]:
    """Every YAML block of the documentation that declares a Custom::EcsAmi, as a template (a block
    of resources alone is put under `Resources:`), and where it is."""
    found = []
    for page in [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]:
        # The Syntax skeleton of the reference names types, not values.
        text = re.sub(r"<!-- syntax: begin.*?<!-- syntax: end -->", "", page.read_text(), flags=re.S)
        for number, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            if "Type: Custom::EcsAmi" not in block:
                continue
            if not re.search(r"^Resources:", block, re.M):
                block = "Resources:\n" + "".join(f"  {line}\n" for line in block.splitlines())
            found.append((f"{page.relative_to(REPO)} block {number + 1}", block))
    return found


def test_the_documentations_templates_pass(tmp_path):
    templates = documented_templates()
    assert len(templates) >= 4, templates
    paths = []
    for index, (_, text) in enumerate(templates):
        path = tmp_path / f"doc-{index}.yaml"
        path.write_text(text)
        paths.append(path)
    found = lint(paths)
    where = {str(path): name for path, (name, _) in zip(paths, templates)}
    assert found == [], "\n".join(f"{where.get(m['Filename'], m['Filename'])}: {m['Rule']['Id']} {m['Message']}"
                                   for m in found)


def valid() -> dict:
    return copy.deepcopy(SCHEMA["examples"][2])


def broken(change) -> dict:
    properties = valid()
    change(properties)
    return properties


# Each broken resource, and what the error must say: the property's path (as the function's own
# Reasons name it) and a word of what is wrong.
BROKEN = {
    "Misspelt": (lambda p: p.update(InstanceTyp=p.pop("InstanceType")), "InstanceTyp", "Did you mean 'InstanceType'"),
    "DaysZero": (lambda p: p.update(DeprecateAfterDays=0), "DeprecateAfterDays", "minimum"),
    "DaysTooMany": (lambda p: p.update(DeprecateAfterDays="3651"), "DeprecateAfterDays", "maximum"),
    "UnknownImds": (lambda p: p.update(ImdsSupport="v1.0"), "ImdsSupport", "v2.0"),
    "NoProfile": (lambda p: p.pop("IamInstanceProfile"), "", "'IamInstanceProfile' is a required property"),
    "TwoSources": (lambda p: p.update(SourceAmi="ami-12345678"), "SourceAmi", "Only one of"),
    "BadAmiId": (lambda p: (p.pop("SourceAmiParameter"), p.update(SourceAmi="ami-xyz")), "SourceAmi", "does not match"),
    "StepTypo": (lambda p: p["Steps"][0].update(Command=p["Steps"][0].pop("Commands")), "Steps[0]", "Command"),
    "StepTimeout": (lambda p: p["Steps"][0].update(TimeoutSeconds=43201), "Steps[0].TimeoutSeconds", "maximum"),
    "EbsSize": (lambda p: p["BlockDeviceMappings"][0]["Ebs"].update(VolumeSize=0), "BlockDeviceMappings[0].Ebs.VolumeSize",
                "minimum"),
    "TooManyRegions": (lambda p: p.update(Regions=[{"Region": f"eu-west-{i % 3 + 1}"} for i in range(17)]), "Regions",
                       "maximum item count: 16"),
    "TestsTimeout": (lambda p: p["Tests"].update(TimeoutMinutes=61), "Tests.TimeoutMinutes", "maximum"),
    "NotAList": (lambda p: p.update(SecurityGroupIds="sg-12345678"), "SecurityGroupIds", "array"),
    "LongWithoutMacro": (lambda p: p.update(TimeoutMinutes=600), "TimeoutMinutes", "EcsAmi macro"),
}


def test_each_broken_template_fails_naming_the_property(tmp_path):
    resources = {name: broken(change) for name, (change, _, _) in BROKEN.items()}
    found = lint([write(tmp_path, template(resources))])
    by_resource: dict[str, list[str]] = {}
    for match in found:
        path = match["Location"]["Path"]
        assert path[0] == "Resources", match
        assert match["Rule"]["Id"] == "E9101", match
        by_resource.setdefault(path[1], []).append(match["Message"])
    for name, (_, named, word) in BROKEN.items():
        messages = by_resource.get(name, [])
        assert any(m.startswith(f"{named}: " if named else "") and word in m for m in messages), (name, messages)


def test_a_long_build_passes_with_the_macro_in_the_transform(tmp_path):
    """Over 55 minutes, the template as written names the EcsAmi macro; once expanded, the
    resources carry SignalUrl or Signal instead. Both pass; without either, LongWithoutMacro fails."""
    written = template({"Ami": broken(lambda p: p.update(TimeoutMinutes=600))})
    written["Transform"] = "EcsAmi"
    expanded = template({"AmiBuild": broken(lambda p: p.update(TimeoutMinutes=600, SignalUrl="https://h.invalid/x",
                                                               ImageResource="Ami"))})
    paths = []
    for name, document in (("written", written), ("expanded", expanded)):
        (tmp_path / name).mkdir()
        paths.append(write(tmp_path / name, document))
    found = lint(paths)
    assert found == [], json.dumps(found, indent=1)
