"""The local AWS refuses to start on a moto other than the one its patches are written for
(emulator/versions.py; emulator/local_aws.py calls it at start)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "emulator"))

import versions  # noqa: E402


def test_the_pin_is_read_with_or_without_extras(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nmoto[server]==5.2.1\npytest==9.2.0  # tests\n")
    assert versions.pinned("moto", str(requirements)) == "5.2.1"
    assert versions.pinned("pytest", str(requirements)) == "9.2.0"
    assert versions.pinned("boto3", str(requirements)) is None


def test_another_moto_is_named_with_the_fix(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("moto[server]==5.2.1\n")
    assert versions.mismatch("moto", str(requirements), installed="5.2.1") is None
    problem = versions.mismatch("moto", str(requirements), installed="5.3.0")
    assert "written for moto 5.2.1" in problem and "moto 5.3.0 is installed" in problem
    assert f"pip install -r {requirements}" in problem
    requirements.write_text("moto[server]>=5\n")
    assert "pins no version of moto" in versions.mismatch("moto", str(requirements), installed="5.2.1")


def test_the_installed_moto_is_the_pinned_one():
    # What scripts/lib.sh installs: the local AWS starts on it.
    assert versions.mismatch("moto") is None


def test_every_requirement_pinned_and_installed_is_what_scripts_lib_checks(tmp_path):
    # scripts/lib.sh installs from PyPI unless `python3 emulator/versions.py FILE` exits 0.
    import subprocess

    script = os.path.join(os.path.dirname(versions.__file__), "versions.py")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# comment\nmoto[server]=={versions.installed_version('moto')}\n")
    assert subprocess.run([sys.executable, script, str(requirements)]).returncode == 0
    requirements.write_text("moto[server]==0.0.1\n")
    assert subprocess.run([sys.executable, script, str(requirements)]).returncode == 1
    requirements.write_text("moto[server]>=5\n")
    assert subprocess.run([sys.executable, script, str(requirements)]).returncode == 1
    assert subprocess.run([sys.executable, script]).returncode == 0
