"""The moto the local AWS patches: its patches (emulator/local_aws.py) replace moto's internals as
one version of moto has them, so the local AWS refuses to start on another version rather than
patch what may have moved. The version is the one emulator/requirements.txt pins."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.txt")


def pinned(package: str, requirements: str = REQUIREMENTS) -> str | None:
    """The version `requirements` pins `package` to (`name==X` or `name[extra]==X`), if any."""
    with open(requirements) as handle:
        for line in handle:
            line = line.split("#")[0].strip()
            if "==" not in line:
                continue
            name, wanted = line.split("==", 1)
            if name.split("[")[0].strip().lower() == package.lower():
                return wanted.strip()
    return None


def mismatch(package: str, requirements: str = REQUIREMENTS, installed: str | None = None) -> str | None:
    """Why the installed `package` is not the pinned one, or None when it is."""
    wanted = pinned(package, requirements)
    if wanted is None:
        return f"{os.path.basename(requirements)} pins no version of {package} (name==version)"
    if installed is None:
        try:
            installed = version(package)
        except PackageNotFoundError:
            installed = "none"
    if installed == wanted:
        return None
    return (
        f"its patches of {package} are written for {package} {wanted} ({os.path.basename(requirements)}), "
        f"and {package} {installed} is installed: pip install -r {requirements}"
    )
