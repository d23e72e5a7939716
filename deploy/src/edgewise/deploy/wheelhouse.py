"""A wheelhouse for another device: every wheel ``edgewise[edge]`` needs on a platform and
Python, fetched on the host so that the device installs with no index and no network.

pip resolves for another platform with ``--platform/--python-version/--abi``, but it
evaluates requirement markers (``platform_machine``) for the host. So the edge
requirements and the project's pins (constraints.txt) are evaluated here, for the target,
and pip gets the result without markers. Where the package index has no wheel for a
platform (numpy on armv7l), the device takes Debian's package and the venv sees it
(``--system-site-packages``); the packages that need it are fetched without their
dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from edgewise.edge.errors import EdgewiseError


@dataclass(frozen=True)
class Platform:
    """A device platform: its machine, wheel tags, and what Debian must provide."""

    name: str
    machine: str
    glibc: int  # the newest manylinux_2_N its wheels may need (Debian 12: glibc 2.36)
    system: tuple[tuple[str, str], ...] = ()  # (Python package, Debian package)
    # Fetched without their dependencies: what they need is among ``system``.
    on_system: frozenset[str] = frozenset()

    def tags(self) -> list[str]:
        m = self.machine
        tags = [f"manylinux_2_{n}_{m}" for n in range(self.glibc, 16, -1)]
        tags += [f"manylinux2014_{m}", f"linux_{m}"]
        if m == "x86_64":
            tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
        return tags


PLATFORMS = {
    p.name: p
    for p in (
        Platform("linux-x86_64", "x86_64", 36),
        Platform("linux-aarch64", "aarch64", 36),
        # PyPI has no armv7l numpy or cffi wheel; Raspberry Pi OS 32-bit has python3-numpy
        # 1.24 and python3-cffi 1.15 (which cryptography 45 accepts: constraints.txt).
        Platform(
            "linux-armv7l",
            "armv7l",
            36,
            (("numpy", "python3-numpy"), ("cffi", "python3-cffi")),
            frozenset({"tflite-runtime", "cryptography", "opencv-python-headless"}),
        ),
    )
}
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def check_target(platform: str, python: str) -> Platform:
    """The platform, or one line naming what is allowed."""
    if platform not in PLATFORMS:
        raise EdgewiseError(f"--platform {platform!r}: use one of {', '.join(PLATFORMS)}")
    if python not in PYTHONS:
        raise EdgewiseError(f"--python {python!r}: use one of {', '.join(PYTHONS)}")
    return PLATFORMS[platform]


def environment(platform: Platform, python: str, extra: str = "") -> dict[str, str]:
    """Marker environment of a Linux CPython ``python`` on ``platform``."""
    return {
        "python_version": python,
        "python_full_version": python + ".0",
        "platform_machine": platform.machine,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": extra,
    }


def requirements(platform: Platform, python: str, extras: tuple[str, ...] = ()) -> list[str]:
    """The edge part's requirements for the target, markers evaluated (names + specifiers)."""
    from packaging.requirements import Requirement

    declared: list[str] = []
    for part in ("edgewise-edge", "edgewise-deploy"):  # what `edgewise[edge]` installs
        try:
            declared += requires(part) or []
        except PackageNotFoundError:
            raise EdgewiseError(f"{part} is not installed here: install the host extra") from None
    out: list[str] = []
    for line in declared:
        req = Requirement(line)
        if req.name.startswith("edgewise"):
            continue  # built from the checkout
        wanted = req.marker is None or any(
            req.marker.evaluate(environment(platform, python, extra)) for extra in ("", *extras)
        )
        if wanted:
            req.marker = None
            out.append(str(req))
    return sorted(set(out))


def pins(constraints: Path, platform: Platform, python: str) -> list[str]:
    """The constraints file's lines that apply to the target, without their markers."""
    from packaging.requirements import Requirement

    out = []
    for raw in constraints.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(environment(platform, python)):
            req.marker = None
            out.append(str(req))
    return out


def download(
    platform: Platform,
    python: str,
    wanted: list[str],
    constraints: Path,
    dest: Path,
) -> list[Path]:
    """Fetch the wheels of ``wanted`` and their dependencies for the target into ``dest``."""
    from packaging.requirements import Requirement

    dest.mkdir(parents=True, exist_ok=True)
    pinned = dest.parent / ".constraints.txt"
    pinned.write_text("\n".join(pins(constraints, platform, python)) + "\n")
    abi = "cp" + python.replace(".", "")
    target = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    target += ["--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in [*platform.tags(), "any"]:
        target += ["--platform", tag]
    system = {name for name, _ in platform.system}
    own = [w for w in wanted if Requirement(w).name not in system]
    # With a Debian-provided package: who depends on it comes without dependencies.
    needs_system = [w for w in own if Requirement(w).name in platform.on_system]
    rest = [w for w in own if w not in needs_system]
    runs = [(rest, []), (needs_system, ["--no-deps"])]
    for group, flags in runs:
        if not group:
            continue
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        cmd += [*target, *flags, "-c", str(pinned), "-d", str(dest), *group]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_pip_env())
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")]
            raise EdgewiseError(
                f"no wheels for {platform.name} / CPython {python}: "
                + (" ".join(lines[-2:]) or done.stderr.strip()[-300:])
            )
    pinned.unlink()
    return sorted(dest.glob("*.whl"))


def pip_wheel(dest: Path) -> Path:
    """pip itself as a wheel: the device's venv is made without ensurepip (Debian splits
    it into python3-venv) and gets pip from this wheel."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run(
        [*cmd, "-d", str(dest), "pip"], capture_output=True, text=True, env=_pip_env()
    )
    found = sorted(dest.glob("pip-*.whl"))
    if done.returncode != 0 or not found:
        raise EdgewiseError(f"cannot fetch pip's wheel: {done.stderr.strip()[-300:]}")
    return found[-1]


def build_own(source: Path, parts: tuple[str, ...], dest: Path) -> list[Path]:
    """The project's own wheels (the front door and ``parts``) built from a checkout."""
    if not (source / "pyproject.toml").is_file() or not (source / "edge").is_dir():
        raise EdgewiseError(
            f"--source {source}: not a checkout of edgewise (no pyproject.toml, edge/)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    built = []
    for part in (".", *parts):
        # setuptools reuses build/lib: a module deleted since would ride along in the wheel.
        shutil.rmtree(source / part / "build", ignore_errors=True)
        before = set(dest.glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dest)]
        done = subprocess.run(
            [*cmd, str(source / part)], capture_output=True, text=True, env=_pip_env()
        )
        if done.returncode != 0:
            raise EdgewiseError(f"building the wheel of {part}: {done.stderr.strip()[-300:]}")
        built += sorted(set(dest.glob("*.whl")) - before)
    return built


def _pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env
