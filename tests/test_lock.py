"""The pinned environments (issue 22): requirements/cpu.lock and cuda.lock cover pyproject.toml, every
package hashed; environment.yml installs the CUDA lock; make setup installs a lock (tools/lock.py);
run.json's sessions say which lock the environment matches (capslib/core/provenance.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from capslib.core import provenance

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")


def _load_tool():
    spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lock = _load_tool()
TARGETS = list(lock.TARGETS.values())


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def project_requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for every dependency, every extra's and the build system's."""
    data = pyproject()
    found = [("dependencies", Requirement(r)) for r in data["project"]["dependencies"]]
    for extra, requirements in data["project"].get("optional-dependencies", {}).items():
        found += [(f"extra {extra}", Requirement(r)) for r in requirements]
    found += [("build-system", Requirement(r)) for r in data["build-system"]["requires"]]
    return found


def marker_environment(target) -> dict:
    return {"python_version": target.python, "python_full_version": f"{target.python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_each_lock_pins_every_requirement_of_pyproject_with_hashes(target):
    """Every dependency, every extra's and the build system's requirement is pinned in the lock, at a
    version that pyproject.toml admits, with at least one sha256: after an edit of pyproject.toml's
    dependencies this fails until `make lock` has run."""
    pins = lock.pins(target.lock.read_text())
    wrong = []
    for where, requirement in project_requirements():
        if requirement.marker and not requirement.marker.evaluate(marker_environment(target)):
            continue
        name = lock.normalize(requirement.name)
        if name not in pins:
            wrong.append(f"{requirement} ({where}): not in the lock")
            continue
        version, hashes = pins[name]
        if not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{requirement} ({where}): the lock pins {version}")
        if not hashes:
            wrong.append(f"{requirement} ({where}): no hash")
    assert not wrong, f"{target.lock.name} is out of date (run make lock): " + "; ".join(wrong)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_every_line_of_a_lock_is_a_hashed_pin(target):
    """pip installs it with --require-hashes: every requirement exactly pinned (==) and hashed, nothing
    else (no editable or unpinned line, no index of one machine's)."""
    text = target.lock.read_text()
    for name, block in lock.blocks(text):
        if name is None:
            assert block.startswith("#") or not block.strip(), f"{target.lock.name}: not a pin: {block!r}"
        else:
            assert lock.pins(block)[name][1], f"{target.lock.name}: {name} has no hash"
    assert "--index-url" not in text and "--find-links" not in text and "file:" not in text


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_each_lock_holds_its_inputs_and_names_its_target(target):
    pins = lock.pins(target.lock.read_text())
    for line in target.inputs.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            version = pins[lock.normalize(requirement.name)][0]
            assert requirement.specifier.contains(version, prereleases=True), (line, version)
    header = "".join(block for name, block in lock.blocks(target.lock.read_text()) if name is None)
    assert f"CPython {target.python} on {target.platform}" in header and "make lock" in header


def test_the_cpu_lock_has_torch_cpu_build_and_the_cuda_lock_pypis_cuda_build():
    cpu, cuda = (lock.pins(lock.TARGETS[n].lock.read_text()) for n in ("cpu", "cuda"))
    assert cpu["torch"][0].endswith("+cpu") and not any(n.startswith("nvidia-") for n in cpu)
    # the official CPU wheel for CPython 3.11, x86_64 (PyTorch's CPU index; the same file as on CI's disk)
    assert "sha256:6746dbcbeb526eb61330b76b41ff1b4eb848951103a892eeb080dfa2b264667b" in cpu["torch"][1]
    assert "+" not in cuda["torch"][0] and "nvidia-cudnn-cu13" in cuda and "triton" in cuda


def test_environment_yml_installs_the_cuda_lock_and_nothing_else():
    """conda brings the CUDA lock's Python, pip and make; every package comes from the lock, hashed."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_section = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert sorted(conda) == sorted([f"python={lock.TARGETS['cuda'].python}", "pip", "make"])
    assert pip_section == [["-r requirements/cuda.lock"]]


def test_make_setup_installs_the_cpu_lock_by_default_and_ci_runs_it():
    makefile = (ROOT / "Makefile").read_text()
    assert "\nLOCK ?= cpu\n" in makefile and "\nlock:\n\t$(PYTHON) tools/lock.py compile" in makefile
    assert "setup:\n\t$(PYTHON) tools/lock.py install $(LOCK)\n" in makefile
    assert "make setup" in (ROOT / ".ci" / "run").read_text()


# ------------------------------------------------------------------------------ tools/lock.py's parsing

LOCK_TEXT = """# This file was autogenerated by uv via the following command:
#    make lock
numpy==2.4.6 \\
    --hash=sha256:{a} \\
    --hash=sha256:{b}
    # via capslib (pyproject.toml)
Torch==2.13.0+cpu \\
    --hash=sha256:{c}
    # via
    #   -r requirements/cpu.in
    #   capslib (pyproject.toml)
typing_extensions==4.16.0 \\
    --hash=sha256:{d}
    # via torch
""".format(a="a" * 64, b="b" * 64, c="c" * 64, d="d" * 64)


def test_pins_blocks_and_filters():
    pins = lock.pins(LOCK_TEXT)
    assert pins == {"numpy": ("2.4.6", ["sha256:" + "a" * 64, "sha256:" + "b" * 64]),
                    "torch": ("2.13.0+cpu", ["sha256:" + "c" * 64]),
                    "typing-extensions": ("4.16.0", ["sha256:" + "d" * 64])}
    assert "".join(block for _, block in lock.blocks(LOCK_TEXT)) == LOCK_TEXT
    rest = lock.without(LOCK_TEXT, {"torch"})
    assert set(lock.pins(rest)) == {"numpy", "typing-extensions"} and "c" * 64 not in rest and "requirements/cpu.in" not in rest
    assert lock.only(LOCK_TEXT, {"torch"}).startswith("Torch==2.13.0+cpu") and set(lock.pins(lock.only(LOCK_TEXT, {"torch"}))) == {"torch"}
    assert provenance.lock_pins(LOCK_TEXT) == {name: version for name, (version, _) in pins.items()}


def test_extras_are_pyprojects():
    assert lock.extras() == sorted(pyproject()["project"]["optional-dependencies"])


# ---------------------------------------------------------------------- make setup's decisions (no pip)

@pytest.fixture
def fake_install(monkeypatch, tmp_path):
    """tools/lock.py's install() with pip recorded, not run, on a lock of its own: returns
    run(lock name, installed torch, gpu build, local wheelhouse holds torch) -> pip's calls, each
    with the requirements file's text in place of its name."""
    target = lock.Target("cpu", "3.11", "x86_64-manylinux_2_28", "https://torch.example/cpu", "test")
    (tmp_path / "cpu.lock").write_text(LOCK_TEXT)
    monkeypatch.setattr(lock, "REQUIREMENTS", tmp_path)
    monkeypatch.setitem(lock.TARGETS, "cpu", target)
    monkeypatch.setitem(lock.TARGETS, "cuda", lock.Target("cuda", "3.12", "x86_64-manylinux_2_28", None, "test"))
    (tmp_path / "cuda.lock").write_text(LOCK_TEXT.replace("2.13.0+cpu", "2.11.0"))
    monkeypatch.setattr(lock, "check_interpreter", lambda target: None)

    def run(name, torch, gpu=False, local=True):
        calls = []

        def pip(*args, **kwargs):
            args = [str(a) for a in args]
            if "-r" in args:
                i = args.index("-r") + 1
                args[i] = Path(args[i]).read_text()
            calls.append(args)
            ok = local or "--no-index" not in args
            return type("Done", (), {"returncode": 0 if ok else 1, "stdout": "Successfully installed torch\n"})()

        monkeypatch.setattr(lock, "pip", pip)
        monkeypatch.setattr(lock, "installed_torch", lambda: torch)
        monkeypatch.setattr(lock, "torch_is_gpu_build", lambda: gpu)
        lock.install(name)
        return calls
    return run


def test_setup_without_torch_takes_the_locked_cpu_wheel_first_then_the_lock(fake_install):
    calls = fake_install("cpu", None)
    torch_only = lock.only(LOCK_TEXT, {"torch"})
    assert calls[0] == ["install", "--require-hashes", "--no-deps", "--no-index", "-r", torch_only]
    assert calls[1] == ["install", "--require-hashes", "-r", LOCK_TEXT]
    assert calls[2][:3] == ["install", "--no-deps", "--no-build-isolation"] and calls[2][-2] == "-e"
    assert len(calls) == 3


def test_setup_asks_pytorchs_index_when_no_wheelhouse_holds_torch(fake_install):
    calls = fake_install("cpu", "2.5.0+cpu", local=False)  # another CPU torch is replaced
    assert "--no-index" in calls[0]
    assert calls[1] == ["install", "--require-hashes", "--no-deps", "--index-url", "https://torch.example/cpu",
                        "-r", lock.only(LOCK_TEXT, {"torch"})]
    assert calls[2] == ["install", "--require-hashes", "-r", LOCK_TEXT]


def test_setup_keeps_an_installed_gpu_build_of_torch(fake_install):
    calls = fake_install("cpu", "2.11.0+cu130", gpu=True)
    assert calls[0] == ["install", "--require-hashes", "-r", lock.without(LOCK_TEXT, {"torch"})]
    assert len(calls) == 2


def test_setup_with_the_locked_torch_installs_the_lock_as_it_is(fake_install):
    calls = fake_install("cpu", "2.13.0+cpu")
    assert calls[0] == ["install", "--require-hashes", "-r", LOCK_TEXT] and len(calls) == 2


def test_setup_of_the_cuda_lock_replaces_any_torch_from_the_lock_itself(fake_install):
    calls = fake_install("cuda", "2.13.0+cpu", gpu=False)
    assert calls[0] == ["install", "--require-hashes", "-r", LOCK_TEXT.replace("2.13.0+cpu", "2.11.0")]
    assert len(calls) == 2


def failing(monkeypatch, fails: str, writes: Path | None = None):
    """subprocess.run as tools/lock.py calls it, each call recorded; the first whose command contains `fails`
    exits 1 as pip does when it refuses (first writing `writes`, as uv writes its -o file before failing)."""
    import subprocess

    calls = []

    def run(command, check=True, **kwargs):
        calls.append(command)
        if any(fails in str(word) for word in command):
            if writes is not None:
                writes.write_text("half written\n")
            if check:
                raise subprocess.CalledProcessError(1, command)
            return subprocess.CompletedProcess(command, 1, "", "")
        return subprocess.CompletedProcess(command, 0, "Successfully installed torch\n", "")
    monkeypatch.setattr(lock.subprocess, "run", run)
    return calls


def test_setup_that_pip_refuses_ends_in_one_line_naming_the_lock(fake_install, monkeypatch, capsys):
    """A hash in the lock that does not match: pip refuses (its message), then one line, no traceback."""
    monkeypatch.setattr(lock, "installed_torch", lambda: "2.13.0+cpu")
    monkeypatch.setattr(lock, "torch_is_gpu_build", lambda: False)
    failing(monkeypatch, "--require-hashes")
    with pytest.raises(SystemExit) as ended:
        lock.main(["install", "cpu"])
    line = ended.value.code
    assert isinstance(line, str) and "\n" not in line, line
    assert line.startswith("make setup: pip install failed (exit 1), installing ") and "cpu.lock" in line
    assert "hash" in line and ended.value.__suppress_context__


def test_lock_without_network_ends_in_one_line_and_leaves_the_locks_as_they_were(tmp_path, monkeypatch):
    for name in ("pyproject.toml", "requirements/cpu.in", "requirements/cuda.in", "requirements/cpu.lock",
                 "requirements/cuda.lock"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    monkeypatch.setattr(lock, "ROOT", tmp_path)
    monkeypatch.setattr(lock, "REQUIREMENTS", tmp_path / "requirements")
    monkeypatch.setattr(lock, "BUILD", tmp_path / "build" / "lock")
    for name, target in list(lock.TARGETS.items()):  # their lock and inputs in the copy
        monkeypatch.setitem(lock.TARGETS, name, lock.Target(target.name, target.python, target.platform,
                                                             target.torch_index, target.about))
    before = {p.name: p.read_text() for p in (tmp_path / "requirements").glob("*.lock")}
    # offline: uv's own install is the first to reach an index
    failing(monkeypatch, lock.UV)
    with pytest.raises(SystemExit) as ended:
        lock.main(["compile"])
    assert "\n" not in ended.value.code and ended.value.code.startswith("make lock: pip install failed (exit 1)")
    assert "the locks are as they were" in ended.value.code
    # uv fails on the second lock after writing the first: both are put back
    monkeypatch.setattr(lock, "uv", lambda: Path("uv"))
    monkeypatch.setattr(lock, "fetch_torch", lambda target, wheels: None)
    first = lock.TARGETS["cpu"].lock

    def compile_then_fail(command, check=True, **kwargs):
        import subprocess
        out = Path(command[command.index("-o") + 1])
        (tmp_path / out).write_text("half written\n")
        if out.name == "cuda.lock":
            raise subprocess.CalledProcessError(2, command)
        (tmp_path / out).write_text(before[out.name])  # a lock as uv writes it, so that the first one passes
        return subprocess.CompletedProcess(command, 0, "", "")
    monkeypatch.setattr(lock.subprocess, "run", compile_then_fail)
    with pytest.raises(SystemExit) as ended:
        lock.main(["compile"])
    assert ended.value.code.startswith("make lock: uv pip compile failed (exit 2)")
    assert first.exists() and {p.name: p.read_text() for p in (tmp_path / "requirements").glob("*.lock")} == before


def test_setup_refuses_a_python_the_lock_is_not_for(monkeypatch):
    target = lock.Target("cpu", "2.7", "x86_64-manylinux_2_28", None, "test")
    with pytest.raises(SystemExit, match="(?s)is for CPython 2.7 on Linux x86_64.*LOCK=none"):
        lock.check_interpreter(target)


# ------------------------------------------------------------------------ run.json: which lock, matched

def write_locks(folder: Path, **locks: str) -> Path:
    folder.mkdir()
    for name, text in locks.items():
        (folder / f"{name}.lock").write_text(text)
    return folder


def test_lock_status_matches_only_when_every_pin_is_installed_at_its_version(tmp_path):
    import hashlib
    folder = write_locks(tmp_path / "requirements", cpu=LOCK_TEXT, cuda=LOCK_TEXT.replace("2.13.0+cpu", "2.11.0"))
    digest = hashlib.sha256(LOCK_TEXT.encode()).hexdigest()[:12]
    cuda_digest = hashlib.sha256((folder / "cuda.lock").read_bytes()).hexdigest()[:12]
    installed = {"numpy": "2.4.6", "torch": "2.13.0+cpu", "typing-extensions": "4.16.0", "pytest": "9.2.0"}
    assert provenance.lock_status(folder, installed) == f"cpu.lock sha256:{digest} matches"
    gpu = {**installed, "torch": "2.11.0+cu130"}  # the GPU machine's torch: neither lock's file, but of
    assert provenance.lock_status(folder, gpu) == (  # the CUDA lock's version: the nearer lock is named
        f"cuda.lock sha256:{cuda_digest} differs: torch 2.11.0+cu130 (locked 2.11.0)")
    missing = {"torch": "2.13.0+cpu", "numpy": "2.3.5"}
    assert provenance.lock_status(folder, missing) == (
        f"cpu.lock sha256:{digest} differs: numpy 2.3.5 (locked 2.4.6), typing-extensions missing (locked 4.16.0)")
    assert provenance.lock_status(folder, {}, listed=1).endswith("differs: numpy missing (locked 2.4.6) and 2 more")
    assert provenance.lock_status(tmp_path / "nowhere", installed).startswith("no lock file")


def test_provenance_records_the_lock_beside_torchs_version():
    info = provenance.provenance("cpu")
    assert info["software"].startswith("torch ")
    assert info["lock"] == provenance.lock_status()
    assert list(info).index("lock") == list(info).index("software") + 1
    assert info["lock"].split(" ")[0] in {t.lock.name for t in TARGETS}
    assert info["lock"].split(" ")[2] in {"matches", "differs:"}
