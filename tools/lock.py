"""The pinned environments: requirements/cpu.lock and requirements/cuda.lock (`make setup`, `make lock`).

    python tools/lock.py install cpu      make setup: the CPU lock (the default; what CI installs)
    python tools/lock.py install cuda     make setup LOCK=cuda: the CUDA lock (a GPU machine)
    python tools/lock.py install none     make setup LOCK=none: no lock, pyproject.toml's ranges
    python tools/lock.py compile          make lock: both locks again from pyproject.toml and requirements/*.in,
                                          keeping every pin that still fits (--upgrade: the newest that fit)

Each lock pins every package, dependencies of dependencies included, to one version with the sha256 of
every file of that version on its index, for one target (TARGETS): `pip install --require-hashes` then
installs exactly those files or fails. The locks are pip requirements files: installing needs nothing but
pip, and environment.yml installs the CUDA lock the same way.

Why uv (`uv pip compile`), not pip-tools: uv takes each file's sha256 from the index's listing and reads a
wheel's metadata by ranges, so the CUDA lock (torch and its CUDA wheels, several GB) resolves in seconds
without downloading them; pip-tools asks PyPI's JSON API for hashes, and where that is not reachable (as on
this project's machines, which reach PyPI's simple index only) it downloads every file to hash it. uv also
resolves for another Python and platform than the one it runs on, so both locks are written on any machine.
uv ignores pip's configuration: the CPU build of torch, which is not on PyPI, is fetched by pip first (from
a local wheelhouse in pip's find-links, else PyTorch's CPU index) into build/lock/wheels, where uv finds it.

`install` keeps a GPU build of torch that is already installed when asked for the CPU lock (replacing it by
the CPU build is never wanted): everything else is installed from the lock, and the run.json of what runs
there says the environment differs from the lock in torch (capslib/core/provenance.py). Any other torch
that differs from the lock is replaced by the locked one.

The standard library only: `install` runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
BUILD = ROOT / "build" / "lock"
UV = "uv==0.13.9"  # the version that wrote the committed locks (make lock installs it into build/lock/venv)


@dataclass(frozen=True)
class Target:
    """What a lock is resolved for: CPython `python` on `platform` (uv's --python-platform)."""
    name: str
    python: str
    platform: str
    torch_index: str | None  # where torch's wheel is when not on PyPI (fetched first, on its own)
    about: str

    @property
    def lock(self) -> Path:
        return REQUIREMENTS / f"{self.name}.lock"

    @property
    def inputs(self) -> Path:
        return REQUIREMENTS / f"{self.name}.in"

    @property
    def pip_platform(self) -> str:  # x86_64-manylinux_2_28 -> manylinux_2_28_x86_64
        machine, _, tag = self.platform.partition("-")
        return f"{tag}_{machine}"


TARGETS = {
    "cpu": Target("cpu", "3.11", "x86_64-manylinux_2_28", "https://download.pytorch.org/whl/cpu",
                  "CI and the project's CPU machines: torch's CPU build"),
    "cuda": Target("cuda", "3.12", "x86_64-manylinux_2_28", None,
                   "GPU machines: PyPI's torch, a CUDA build, as in the committed GPU results"),
}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares them: Jinja2, jinja_2 -> jinja2."""
    return re.sub(r"[-_.]+", "-", name).lower()


def blocks(text: str) -> list[tuple[str | None, str]]:
    """The lock's text in blocks: each pinned requirement (name normalized) with its indented lines (hashes,
    the comments saying what needs it); other lines (the header) as blocks of their own, named None."""
    out: list[tuple[str | None, str]] = []
    for line in text.splitlines(keepends=True):
        match = _PIN.match(line)
        if match:
            out.append((normalize(match.group(1)), line))
        elif line[:1].isspace() and out and out[-1][0] is not None:
            out[-1] = (out[-1][0], out[-1][1] + line)
        else:
            out.append((None, line))
    return out


def pins(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of each requirement the lock pins."""
    return {name: (_PIN.match(block).group(2), _HASH.findall(block))
            for name, block in blocks(text) if name is not None}


def without(text: str, names: set[str]) -> str:
    """The lock less the requirements named (normalized names)."""
    return "".join(block for name, block in blocks(text) if name not in names)


def only(text: str, names: set[str]) -> str:
    """The requirements named, with their hashes, alone."""
    return "".join(block for name, block in blocks(text) if name in names)


def shown(path: Path) -> str:
    """A path as the repository's files name it (requirements/cpu.lock), where it is one of them."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in command), flush=True)
    return subprocess.run([str(c) for c in command], check=kwargs.pop("check", True), **kwargs)


def pip(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pip", *args], **kwargs)


# ---------------------------------------------------------------------------------------------- install

def check_interpreter(target: Target) -> None:
    here = (sys.implementation.name, f"{sys.version_info.major}.{sys.version_info.minor}", platform.system(),
            platform.machine())
    if here != ("cpython", target.python, "Linux", "x86_64"):
        raise SystemExit(
            f"{shown(target.lock)} is for CPython {target.python} on Linux x86_64; this is "
            f"{here[0]} {here[1]} on {here[2]} {here[3]} ({sys.executable}).\n"
            f"Use a Python {target.python} (e.g. make setup PYTHON=python{target.python}), the other lock, or "
            "`make setup LOCK=none` for an install from pyproject.toml's ranges, not pinned.")


def installed_torch() -> str | None:
    from importlib import metadata
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def torch_is_gpu_build() -> bool:
    probe = "import torch; print(bool(torch.version.cuda or getattr(torch.version, 'hip', None)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() == "True"


def install(name: str) -> None:
    if name == "none":
        pip("install", "-e", f"{ROOT}[{','.join(extras())}]")
        return
    target = TARGETS[name]
    check_interpreter(target)
    text = target.lock.read_text()
    locked = pins(text)["torch"][0]
    have = installed_torch()
    with tempfile.TemporaryDirectory(prefix="capslib-lock-") as tmp:
        requirements = target.lock
        if have is not None and have != locked and target.name == "cpu" and torch_is_gpu_build():
            print(f"torch {have}, a GPU build, is installed: kept. Everything else comes from "
                  f"{shown(target.lock)}; this environment differs from it in torch, and run.json "
                  "says so (make setup LOCK=cuda installs the CUDA lock).", flush=True)
            requirements = Path(tmp) / f"{target.name}-without-torch.txt"
            requirements.write_text(without(text, {"torch"}))
        elif have != locked and target.torch_index:
            # torch alone first, from its own index: given to the whole install as an extra index, pip would
            # ask it for every package (where it is unreachable, as on this project's CI machines, 8 s of
            # retries each), and only torch is wanted from it. The rest then comes from pip's usual indexes.
            torch_only = Path(tmp) / "torch.txt"
            torch_only.write_text(only(text, {"torch"}))
            print(f"torch {locked}: from a local wheelhouse (pip's find-links) if one holds it, else from "
                  f"{target.torch_index}", flush=True)
            local = pip("install", "--require-hashes", "--no-deps", "--no-index", "-r", torch_only, check=False,
                        capture_output=True, text=True)
            if local.returncode != 0:
                print("not in a local wheelhouse", flush=True)
                pip("install", "--require-hashes", "--no-deps", "--index-url", target.torch_index, "-r", torch_only)
            else:
                print(local.stdout.strip().splitlines()[-1], flush=True)
        pip("install", "--require-hashes", "-r", requirements)
    # capslib itself, editable, built with the locked setuptools (its build-system, pinned in the lock)
    pip("install", "--no-deps", "--no-build-isolation", "-e", ROOT)


# ---------------------------------------------------------------------------------------------- compile

def extras() -> list[str]:
    """The names of pyproject.toml's extras ([project.optional-dependencies]): every one is locked."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text, re.M | re.S)
    return sorted(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*=", section.group(1), re.M)) if section else []


def uv() -> Path:
    """uv at the version UV names, in a virtual environment of its own under build/lock."""
    venv = BUILD / "venv"
    stamp = venv / "uv-requirement"
    if not stamp.exists() or stamp.read_text().strip() != UV:
        run([sys.executable, "-m", "venv", "--clear", venv])
        run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", UV])
        stamp.write_text(UV + "\n")
    return venv / "bin" / "uv"


def fetch_torch(target: Target, wheels: Path) -> None:
    """The torch wheel that `target` pins (requirements/<name>.in) into `wheels`: from a local wheelhouse in
    pip's find-links if one holds it, else from the target's torch index. uv finds it there (--find-links)."""
    requirement = next(line.split("#")[0].strip() for line in target.inputs.read_text().splitlines()
                       if re.match(r"\s*torch\s*==", line))
    common = ["download", "--no-deps", "--only-binary=:all:", "--implementation", "cp", "--python-version",
              target.python, "--platform", target.pip_platform, "--dest", wheels, requirement]
    if pip(*common, "--no-index", check=False, capture_output=True, text=True).returncode != 0:
        print(f"{requirement}: not in a local wheelhouse, from {target.torch_index}", flush=True)
        pip(*common, "--index-url", target.torch_index)


def header(target: Target) -> str:
    return (f"# {target.lock.relative_to(ROOT)}: {target.about}. For CPython {target.python} on {target.platform}.\n"
            f"# From pyproject.toml (dependencies, extras {', '.join(extras())}) and "
            f"{target.inputs.relative_to(ROOT)}, by {UV} (tools/lock.py).\n"
            f"# Install: make setup{'' if target.name == 'cpu' else ' LOCK=' + target.name}. "
            "Update: make lock (make lock UPGRADE=1: newest versions). Never edit by hand.\n")


def check_lock(target: Target, before: dict[str, tuple[str, list[str]]]) -> None:
    """Every requirement hashed; a version locked before keeps the hashes it had (a file never changes
    under the same name on an index, so a hash that vanished means another file: a wheelhouse's own build)."""
    after = pins(target.lock.read_text())
    unhashed = sorted(name for name, (_, hashes) in after.items() if not hashes)
    changed = sorted(name for name, (version, hashes) in after.items()
                     if name in before and before[name][0] == version and not set(before[name][1]) <= set(hashes))
    if unhashed or changed:
        raise SystemExit(f"{target.lock.relative_to(ROOT)}: without hashes: {unhashed or 'none'}; "
                         f"hashes changed at the same version: {changed or 'none'}")


def compile_locks(upgrade: bool = False) -> None:
    """Both locks again; if anything fails (no network, uv refusing, a lock whose hashes changed), every lock
    is put back as it was: a lock is the environment's record, never left half-rewritten."""
    originals = {target.lock: target.lock.read_text() for target in TARGETS.values() if target.lock.exists()}
    try:
        _compile_locks(upgrade)
    except BaseException:
        for path, text in originals.items():
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        raise


def _compile_locks(upgrade: bool) -> None:
    uv_bin = uv()
    wheels = BUILD / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for target in TARGETS.values():
        before = pins(target.lock.read_text()) if target.lock.exists() else {}
        command = [uv_bin, "pip", "compile", "pyproject.toml", target.inputs.relative_to(ROOT), "--all-extras",
                   "--generate-hashes", "--python-version", target.python, "--python-platform", target.platform,
                   "--custom-compile-command", "make lock", "--quiet", "-o", target.lock.relative_to(ROOT)]
        if target.torch_index:
            fetch_torch(target, wheels)
            command += ["--find-links", wheels.relative_to(ROOT)]
        if upgrade:
            command.append("--upgrade")
        run(command, cwd=ROOT)
        uv_header, _, rest = target.lock.read_text().partition("\n#    make lock\n")
        target.lock.write_text(uv_header + "\n#    make lock\n" + header(target) + rest)
        check_lock(target, before)
        print(f"{target.lock.relative_to(ROOT)}: {len(pins(target.lock.read_text()))} packages, "
              f"sha256 {digest(target.lock)[:12]}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("install", help="install a lock into this Python (make setup)")
    setup.add_argument("lock", choices=[*TARGETS, "none"])
    lock = commands.add_parser("compile", help="write the locks again (make lock)")
    lock.add_argument("--upgrade", action="store_true", help="the newest versions that fit, not the locked ones")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.lock)
        else:
            compile_locks(args.upgrade)
    except subprocess.CalledProcessError as err:
        # pip or uv has said why above (a hash that does not match, an index out of reach): one line more
        # saying what failed and what to look at, not Python's traceback of the call
        raise SystemExit(failure(args.command, args.lock if args.command == "install" else None, err)) from None


def failure(command: str, lock_name: str | None, err: subprocess.CalledProcessError) -> str:
    """The line that ends a failed `make setup` or `make lock`."""
    words = [str(c) for c in err.cmd]
    step = f"pip {words[3]}" if words[1:3] == ["-m", "pip"] else " ".join([Path(words[0]).name, *words[1:3]])
    if command == "install":
        locked = shown(TARGETS[lock_name].lock) if lock_name in TARGETS else "pyproject.toml"
        return (f"make setup: {step} failed (exit {err.returncode}), installing {locked}: see its message above. "
                f"A hash that does not match: the lock differs from the commit (git diff {locked}) or an index "
                "served another file; no network: the index was out of reach. Run make setup again once fixed")
    return (f"make lock: {step} failed (exit {err.returncode}): see its message above; the locks are as they were. "
            "make lock needs PyPI (and, for torch's CPU wheel, a local wheelhouse or PyTorch's index)")


if __name__ == "__main__":
    main()
