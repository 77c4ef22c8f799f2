"""The moto the local AWS patches: its patches (emulator/patches.py) replace moto's internals as
one version of moto has them, so the local AWS refuses to start on another version rather than
patch what may have moved. The version is the one emulator/requirements.txt pins.

Run as a script, it says whether every requirement of a file is pinned and installed at its pin:
scripts/lib.sh installs from PyPI when not."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.txt")


def pins(requirements: str = REQUIREMENTS) -> list[tuple[str, str | None]]:
    """Each requirement of `requirements` as (package, version), the version None where it is not
    pinned with `==`; `name[extra]` is read as `name`."""
    found = []
    with open(requirements) as handle:
        for line in handle:
            line = line.split("#")[0].strip()
            if not line:
                continue
            name, _, wanted = line.partition("==")
            found.append((name.split("[")[0].strip(), wanted.strip() or None))
    return found


def pinned(package: str, requirements: str = REQUIREMENTS) -> str | None:
    """The version `requirements` pins `package` to (`name==X` or `name[extra]==X`), if any."""
    return next((wanted for name, wanted in pins(requirements) if name.lower() == package.lower()), None)


def installed_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "none"


def mismatch(package: str, requirements: str = REQUIREMENTS, installed: str | None = None) -> str | None:
    """Why the installed `package` is not the pinned one, or None when it is."""
    wanted = pinned(package, requirements)
    if wanted is None:
        return f"{os.path.basename(requirements)} pins no version of {package} (name==version)"
    if installed is None:
        installed = installed_version(package)
    if installed == wanted:
        return None
    return (
        f"its patches of {package} are written for {package} {wanted} ({os.path.basename(requirements)}), "
        f"and {package} {installed} is installed: pip install -r {requirements}"
    )


if __name__ == "__main__":
    # scripts/lib.sh: exit 0 when every requirement of the file given (this directory's
    # requirements.txt by default) is pinned and installed at its pin, 1 otherwise.
    import sys

    every = pins(sys.argv[1] if len(sys.argv) > 1 else REQUIREMENTS)
    sys.exit(0 if all(wanted and installed_version(name) == wanted for name, wanted in every) else 1)
