"""The prebuilt package (scripts/package) and its release workflow: the zip is the same for the
same binary and is what Lambda expects (one executable `bootstrap`); the template it writes is
template.yaml deploying that zip instead of compiling; the Serverless Application Repository
metadata keeps to SAR's rules; the workflow's shell passes shellcheck. The arm64 build itself is
too slow for the test run (about 5 minutes): docs/guides/deploying.md reports it, measured.
"""

import os
import re
import runpy
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from cfn_template import load

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "scripts" / "package"


def package(tmp_path, binary, out_name):
    out = tmp_path / out_name
    subprocess.run([str(PACKAGE), "--bootstrap", str(binary), "--out", str(out)], check=True,
                   capture_output=True, text=True)
    return out


@pytest.fixture
def binary(tmp_path):
    # Any bytes do for the packaging; a binary-looking stand-in with every byte value in it.
    path = tmp_path / "bootstrap"
    path.write_bytes(b"\x7fELF" + bytes(range(256)) * 400)
    return path


def test_the_same_binary_gives_the_same_zip_whenever_and_wherever_it_is_packaged(tmp_path, binary):
    first = package(tmp_path, binary, "a")
    os.utime(binary, (1_900_000_000, 1_900_000_000))  # a later file date changes nothing
    binary.chmod(0o600)                                 # nor the mode the file happens to have
    second = package(tmp_path, binary, "b")
    assert (first / "bootstrap.zip").read_bytes() == (second / "bootstrap.zip").read_bytes()


def test_the_zip_holds_one_executable_bootstrap_and_its_checksum_verifies(tmp_path, binary):
    out = package(tmp_path, binary, "dist")
    with zipfile.ZipFile(out / "bootstrap.zip") as archive:
        [entry] = archive.infolist()
        assert entry.filename == "bootstrap"  # Lambda's provided.al2023 runs /var/task/bootstrap
        assert stat.S_IMODE(entry.external_attr >> 16) == 0o755
        assert entry.date_time == (1980, 1, 1, 0, 0, 0)
        assert archive.read(entry) == binary.read_bytes()
    check = subprocess.run(["sha256sum", "-c", "bootstrap.zip.sha256"], cwd=out, capture_output=True,
                           text=True)
    assert check.returncode == 0 and "bootstrap.zip: OK" in check.stdout, check.stdout + check.stderr
    (out / "bootstrap.zip").write_bytes(b"tampered")
    assert subprocess.run(["sha256sum", "-c", "bootstrap.zip.sha256"], cwd=out,
                          capture_output=True).returncode != 0


def test_the_packaged_template_deploys_the_zip_and_is_otherwise_template_yaml(tmp_path, binary):
    out = package(tmp_path, binary, "dist")
    source = load(str(REPO / "template.yaml"))
    packaged = load(str(out / "template.yaml"))
    function = packaged["Resources"]["Function"]
    assert function["Properties"]["CodeUri"] == "bootstrap.zip"
    assert "Metadata" not in function  # nothing tells sam build to compile
    source_function = source["Resources"]["Function"]
    assert source_function["Metadata"]["BuildMethod"] == "rust-cargolambda"
    source_function.pop("Metadata")
    source_function["Properties"]["CodeUri"] = "bootstrap.zip"
    assert packaged == source
    # The README it names as ReadmeUrl is beside it, for sam package and sam publish.
    assert (out / "README.md").read_bytes() == (REPO / "README.md").read_bytes()
    lint = subprocess.run(["cfn-lint", str(out / "template.yaml")], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_sam_package_uploads_the_zip_as_it_is(tmp_path, binary):
    """What `sam deploy` does first with the packaged template: the zip goes to S3 byte for byte,
    and CodeUri and the README become S3 locations (against moto's S3, in process)."""
    sam = os.environ.get("ECS_AMI_SAM") or shutil.which("sam")
    if not sam:
        pytest.skip("no SAM CLI: scripts/test installs one and passes it as ECS_AMI_SAM")
    from moto.server import ThreadedMotoServer
    import boto3

    out = package(tmp_path, binary, "dist")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="local",
                   AWS_SECRET_ACCESS_KEY="local", AWS_REGION="us-east-1",
                   AWS_DEFAULT_REGION="us-east-1", SAM_CLI_TELEMETRY="0")
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
        s3.create_bucket(Bucket="artifacts")
        result = subprocess.run([sam, "package", "--template-file", "template.yaml", "--s3-bucket",
                                 "artifacts", "--output-template-file", str(tmp_path / "packaged.yaml")],
                                cwd=out, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        packaged = load(str(tmp_path / "packaged.yaml"))
        code_uri = packaged["Resources"]["Function"]["Properties"]["CodeUri"]
        match = re.fullmatch(r"s3://artifacts/(\S+)", code_uri)
        assert match, code_uri
        uploaded = s3.get_object(Bucket="artifacts", Key=match.group(1))["Body"].read()
        assert uploaded == (out / "bootstrap.zip").read_bytes()
        readme = packaged["Metadata"]["AWS::ServerlessRepo::Application"]["ReadmeUrl"]
        assert readme.startswith("s3://artifacts/"), readme
    finally:
        server.stop()


def test_the_application_metadata_keeps_to_sars_rules():
    # https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/serverless-sam-template-publishing-applications-metadata-properties.html
    app = load(str(REPO / "template.yaml"))["Metadata"]["AWS::ServerlessRepo::Application"]
    assert re.fullmatch(r"[a-zA-Z0-9\-]{1,140}", app["Name"])
    assert 1 <= len(app["Description"]) <= 256
    assert re.fullmatch(r"^[a-z0-9](([a-z0-9]|-(?!-))*[a-z0-9])?$", app["Author"]) and len(app["Author"]) <= 127
    assert len(app["Labels"]) <= 10
    assert all(re.fullmatch(r"^[a-zA-Z0-9+\-_:\/@]{1,127}$", label) for label in app["Labels"])
    assert (REPO / app["ReadmeUrl"]).is_file()
    # No intrinsic functions: SAR reads the values as they are.
    assert all(isinstance(v, (str, list)) for v in app.values())
    cargo_version = re.search(r'^version = "(.*)"$', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    assert app["SemanticVersion"] == cargo_version


def test_scripts_package_refuses_a_template_whose_version_is_not_cargos():
    script = runpy.run_path(str(PACKAGE))
    assert "CodeUri: bootstrap.zip" in script["packaged_template"](script["cargo_version"]())
    with pytest.raises(SystemExit) as refused:
        script["packaged_template"]("99.0.0")
    assert "SemanticVersion: 99.0.0" in str(refused.value)


def workflow_run_blocks():
    for path in sorted((REPO / ".github" / "workflows").glob("*.yml")):
        workflow = yaml.safe_load(path.read_text())
        for job_name, job in workflow["jobs"].items():
            for step in job["steps"]:
                if "run" in step:
                    yield pytest.param(step["run"], id=f"{path.name}:{job_name}:{step.get('name', '?')}")


@pytest.mark.parametrize("script", list(workflow_run_blocks()))
def test_workflow_run_blocks_pass_shellcheck(script):
    # GitHub substitutes ${{ ... }} before the shell sees the script; a placeholder stands in.
    script = re.sub(r"\$\{\{[^}]*\}\}", "VALUE", script)
    result = subprocess.run(["shellcheck", "--shell=bash", "-"], input=script, text=True,
                            capture_output=True)
    assert result.returncode == 0, result.stdout


def test_the_release_workflow_packages_and_attaches_every_file():
    [release] = [p for p in workflow_run_blocks() if "gh release create" in p.values[0]]
    attached = set(re.findall(r"dist/(\S+)", release.values[0]))
    assert attached == {"bootstrap.zip", "bootstrap.zip.sha256", "template.yaml", "README.md", "BUILDINFO.json"}
