"""What a cluster user sets for `capslib sweep --executor slurm` (capslib/study/slurm.py), declared once
in SlurmSettings: each field is a key of the --slurm-config file and a flag --slurm-<field>, and both are
checked against the same declaration. Plain data (no torch, pandas or submitit): the command line
imports it to build its flags.

An example cluster.toml (every key optional):

    partition = "gpu"
    account = "my-lab"
    qos = "normal"
    gpus = 1                 # per run; a run trains on one GPU
    gpu_type = "a100"        # --gres=gpu:a100:1
    cpus = 4
    mem = 16                 # GB
    time = 240               # minutes per attempt; longer runs are requeued and resume
    signal_delay = 120       # seconds of warning before the limit
    max_running = 8
    sbatch = ["--constraint=a100", "--mail-type=FAIL"]
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import check, option
from ..core.errors import CapslibError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (pyproject.toml)
    import tomli as tomllib


@dataclass(frozen=True)
class SlurmSettings:
    """What a cluster user sets, declared once: each field is a key of the --slurm-config file and a flag
    --slurm-<field> (cli.py derives both from here). None leaves the line out of the sbatch script, so
    the cluster's default applies."""
    partition: str | None = option(None, "partition (sbatch --partition)", metavar="NAME")
    account: str | None = option(None, "account charged (sbatch --account)", metavar="NAME")
    qos: str | None = option(None, "quality of service (sbatch --qos)", metavar="NAME")
    gpus: int | None = option(None, "GPUs per run, 0 or 1 (a run trains on one GPU; default 1, 0 when the "
                              "runs' --device is cpu)", low=0, high=1, metavar="N")
    gpu_type: str | None = option(None, "GPU type to ask for: --gres=gpu:TYPE:1 (e.g. a100)", metavar="TYPE")
    cpus: int | None = option(None, "CPUs per run (sbatch --cpus-per-task; the run's torch threads)", low=1,
                              metavar="N")
    mem: int | None = option(None, "memory per run in GB (sbatch --mem)", low=1, metavar="GB")
    time: int = option(120, "time limit of each attempt in minutes (sbatch --time); a run still training "
                       "then stops at a checkpoint and its task is requeued", low=1, metavar="MINUTES")
    signal_delay: int = option(120, "Slurm warns a task (USR2) this many seconds before its time limit "
                               "(sbatch --signal); at most half the time limit", low=1, metavar="SECONDS")
    max_running: int | None = option(None, "tasks running at a time (the array's %%N)", low=1, metavar="N")
    max_requeues: int = option(20, "time limits and preemptions a task may meet before it gives up (its run "
                               "keeps its checkpoint)", low=0, metavar="N")
    sbatch: tuple[str, ...] = field(default=(), metadata={
        "help": "another sbatch option, in its long form (repeatable: --slurm-sbatch=--constraint=a100; in the "
                "file a list: sbatch = [\"--constraint=a100\"])",
        "metavar": "OPTION"})

    def validate(self) -> "SlurmSettings":
        """Raise CapslibError naming the first setting (as its flag) that is not acceptable."""
        for f in dataclasses.fields(self):
            if f.name != "sbatch":
                problem = check(f, getattr(self, f.name), SlurmSettings)
                if problem:
                    raise CapslibError(f"{flag(f.name)} must be {problem}, got {getattr(self, f.name)!r}")
        for line in self.sbatch:
            problem = sbatch_line_problem(line)
            if problem:
                raise CapslibError(f"{flag('sbatch')} {line!r}: {problem}")
        if 2 * self.signal_delay > 60 * self.time:
            raise CapslibError(f"{flag('signal_delay')} {self.signal_delay} s is more than half of the "
                               f"{self.time}-minute time limit ({flag('time')}): the runs would stop soon after "
                               "they start")
        return self


def flag(name: str) -> str:
    """The command-line flag of a setting: --slurm-signal-delay."""
    return "--slurm-" + name.replace("_", "-")


# sbatch options that a setting above, or capslib itself, writes: a second line would contradict it
OWNED_OPTIONS = {"partition": "partition", "account": "account", "qos": "qos", "gres": "gpus", "gpus": "gpus",
                 "gpus-per-node": "gpus", "gpus-per-task": "gpus", "cpus-per-task": "cpus", "mem": "mem",
                 "time": "time", "signal": "signal_delay", "array": "max_running"}
CAPSLIB_OPTIONS = ("output", "error", "open-mode", "requeue", "no-requeue")  # the task logs and the requeue
# a run is one process on one node, in the folder the sweep started from (its run folders may be relative)
ONE_PROCESS_OPTIONS = ("nodes", "ntasks", "ntasks-per-node", "chdir")
SBATCH_LINE = re.compile(r"(?:#SBATCH\s+)?--([A-Za-z][A-Za-z0-9-]*)(?:=(\S.*))?")


def sbatch_line_problem(line: str) -> str | None:
    """What is wrong with an extra sbatch option, or None."""
    match = SBATCH_LINE.fullmatch(line.strip()) if isinstance(line, str) else None
    if match is None:
        return "expected an sbatch option in its long form, --name or --name=value (e.g. --constraint=a100)"
    name = match.group(1)
    if name in OWNED_OPTIONS:
        setting = OWNED_OPTIONS[name]
        return f"set it with {flag(setting)} (or {setting} in the --slurm-config file)"
    if name in CAPSLIB_OPTIONS:
        return f"capslib writes --{name} itself (the task logs and the requeue depend on it)"
    if name in ONE_PROCESS_OPTIONS:
        return "a task trains one run, in one process on one node, in the folder the sweep starts from"
    return None


def sbatch_options(lines) -> dict:
    """Extra sbatch lines as submitit's additional_parameters: {'constraint': 'a100', 'exclusive': True}."""
    options = {}
    for line in lines:
        name, value = SBATCH_LINE.fullmatch(line.strip()).groups()
        options[name] = True if value is None else value
    return options


def read_settings_file(path: Path | str) -> dict:
    """The settings in a TOML file, each checked as its flag would be; one CapslibError naming the file
    and the key otherwise."""
    try:
        values = tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise CapslibError(f"--slurm-config {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise CapslibError(f"--slurm-config {path}: not a TOML file ({err})") from None
    fields = {f.name: f for f in dataclasses.fields(SlurmSettings)}
    for key, value in values.items():
        if key not in fields:
            raise CapslibError(f"{path}: unknown setting {key!r}; the settings are {', '.join(fields)}")
        if key == "sbatch":
            if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
                raise CapslibError(f"{path}: sbatch must be a list of sbatch options, got {value!r}")
            for line in value:
                problem = sbatch_line_problem(line)
                if problem:
                    raise CapslibError(f"{path}: sbatch {line!r}: {problem}")
            values[key] = tuple(value)
        else:
            problem = check(fields[key], value, SlurmSettings)
            if problem:
                raise CapslibError(f"{path}: {key} must be {problem}, got {value!r}")
    return values


def settings_from(config_file: Path | str | None, given: dict) -> SlurmSettings:
    """The settings of a --slurm-config file (if any), overridden by the flags in `given`; the sbatch
    options of both are kept (the file's first). Checked."""
    values = read_settings_file(config_file) if config_file else {}
    sbatch = tuple(values.get("sbatch", ())) + tuple(given.get("sbatch", ()))
    return SlurmSettings(**{**values, **given, "sbatch": sbatch}).validate()
