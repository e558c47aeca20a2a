"""The official code's choices (config.COMPONENTS), the validation protocol and the ablation's
arithmetic, on CPU."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from capslib.study import summaries as S
from capslib.study import tables as T
from capslib.cli import build_parser, config_from_args
from capslib.core.config import COMPONENTS, OFFICIAL, RECIPES, TrainConfig
from capslib.core.data import all_shifts_order, epoch_data, load_dataset
from capslib.core.model import margin_loss
from capslib.core.checkpoint import model_for
from capslib.core.model import CapsNet, count_parameters
from capslib.core.layout import run_name
from capslib.core.runs import selection
from capslib.study.sweep import finished_run
from capslib.study.studies import (ablation_configs, official_configs, precision_configs, protocol, study_runs,
                                   table1_configs, table1_official_configs, validated_configs)
from capslib.core.train import learning_rate

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# one source of truth


def test_cli_defaults_are_train_configs():
    args = build_parser().parse_args(["train"])
    assert config_from_args(args) == TrainConfig()


def test_train_notebook_restates_no_default():
    # 02_train's parameters cell holds literals (papermill); a run option there is None ("the recipe's
    # value"), so that TrainConfig alone declares the defaults, and every option it names is a field
    import ast
    import json

    notebook = json.loads((REPO / "notebooks" / "02_train.ipynb").read_text())
    (cell,) = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse("".join(cell["source"])).body}
    options = {name: value for name, value in values.items() if name in TrainConfig().to_dict()}
    assert {"dataset", "model", "routing_iterations", "reconstruction", "seed", "recipe"} <= set(options)
    assert all(value is None for value in options.values()), options
    assert values["options"] == {}


def test_every_training_option_is_a_flag_with_its_declared_help():
    import dataclasses

    text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in text
        assert " ".join(f.metadata["help"].split()) in text


def test_an_explicit_none_is_honoured():
    # `--lr-decay-steps none` with the official recipe: the per-epoch schedule, and the name says so
    args = build_parser().parse_args(["train", "--recipe", "official", "--lr-decay-steps", "none"])
    config = config_from_args(args)
    assert config.lr_decay_steps is None and config.variant() == "official-schedule"


def test_every_makefile_sweep_is_a_declared_study_and_every_study_is_swept(tmp_path):
    """The Makefile names the sets of runs and parses no names: what `make reproduce` sweeps is exactly
    what capslib/study/studies.py declares."""
    from capslib.study.studies import STUDIES

    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    done = subprocess.run(["make", "-n", "PROFILE=tiny", f"STUDY_DIR={tmp_path}", "reproduce"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    swept = {line.split("capslib sweep ")[1].split()[0] for line in done.stdout.splitlines() if "capslib sweep " in line}
    assert swept == set(STUDIES) - {"multimnist", "affine"}  # on tiny and quick their notebooks train them


def test_each_notebook_step_waits_for_the_studies_it_reads():
    """The Makefile's prerequisites of each notebook that reads runs are the studies READERS declares
    for it (full profile: there the sweeps train them first), and every study is read by some notebook."""
    from capslib.study.studies import READERS, STUDIES

    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    database = subprocess.run(["make", "-pn", "PROFILE=full", "STUDY_DIR=study", "reproduce"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60).stdout
    waits = {}
    for line in database.splitlines():
        if line.startswith("study/results/notebooks/") and ": | notebooks/" in line:
            source, *prerequisites = line.split(": | ", 1)[1].split()
            waits[Path(source).stem] = tuple(p.split("/")[-2] for p in prerequisites if p.endswith("/.done"))
    assert {name: studies for name, studies in waits.items() if studies} == READERS
    assert {s for studies in READERS.values() for s in studies} == set(STUDIES)


def test_recipes_name_every_component_field():
    fields = {f for group in COMPONENTS.values() for f in group}
    assert fields == set(OFFICIAL) - {"epochs"}
    assert RECIPES["paper"] == {}  # the paper recipe is TrainConfig's defaults


def test_the_paper_recipe_keeps_the_study_settings():
    config = TrainConfig()
    assert (config.batch_size, config.max_shift, config.lr, config.lr_decay, config.epochs) == (128, 2, 1e-3, 0.95, 40)
    assert (config.routing_iterations, config.reconstruction, config.validation_size) == (3, True, 0)
    assert config.variant() == "paper" and run_name(config) == "mnist_routing3_recon_seed1"


# ---------------------------------------------------------------------------------------------
# the model's official variants


def test_official_model_has_the_papers_parameter_count_plus_the_digit_bias():
    model = model_for(TrainConfig.from_recipe("official"))
    assert count_parameters(model) == 8_215_568 + 160
    assert model.primary_caps.bias is None and model.primary_bias.shape == (256,)
    assert model.digit_bias.shape == (10, 16) and torch.all(model.digit_bias == 0.1)


def test_official_init_is_truncated_normal_with_biases_of_0_1():
    torch.manual_seed(0)
    model = CapsNet(routing_iterations=3, reconstruction=True, init="official")
    assert model.W.abs().max() <= 0.2 and 0.08 < model.W.std() < 0.095  # ±2σ truncation shrinks σ to 0.088
    assert model.conv1.weight.abs().max() <= 0.1 and torch.all(model.conv1.bias == 0.1)
    decoder_first = model.decoder.layers[0]
    assert decoder_first.weight.abs().max() <= 0.2 and torch.all(decoder_first.bias == 0.1)


def test_slim_primary_capsules_divide_the_convolution_by_32_and_add_their_bias():
    torch.manual_seed(0)
    slim = CapsNet(routing_iterations=3, reconstruction=True, primary_capsules="slim")
    images = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        slim.primary_bias.uniform_(-1, 1)
        features = slim.primary_caps(torch.relu(slim.conv1(images)))
        s = features.permute(0, 2, 3, 1) / 32 + slim.primary_bias
        s = s.reshape(2, 1152, 8)
        expected = s * (s.norm(dim=-1, keepdim=True) ** 2 / (1 + s.norm(dim=-1, keepdim=True) ** 2)) / s.norm(dim=-1, keepdim=True)
        assert torch.allclose(slim.primary_capsules(images), expected, atol=1e-6)


def test_digit_bias_enters_every_squash():
    torch.manual_seed(0)
    model = CapsNet(routing_iterations=3, reconstruction=False, digit_bias=True)
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        before = model.digit_capsules(images)
        model.digit_bias.fill_(0.0)
        without = model.digit_capsules(images)
    assert not torch.allclose(before, without)


def test_official_loss_weighs_the_margin_loss_one_twentieth():
    torch.manual_seed(0)
    images, targets = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    paper = model_for(TrainConfig())
    official = model_for(TrainConfig(loss_scaling="official"))  # the official loss, nothing else changed
    official.load_state_dict(paper.state_dict())
    a, b = paper(images, targets), official(images, targets)
    assert torch.allclose(a.margin_loss, b.margin_loss)
    assert b.loss.item() == pytest.approx(0.05 * b.margin_loss.item() + 0.0005 * b.reconstruction_loss.item(), rel=1e-5)
    # the official code's own formula: per class 0.5·pos + 0.5·0.5·neg, averaged over batch and classes
    lengths = a.scores
    present = torch.nn.functional.one_hot(targets, 10).float()
    official_margin = (0.5 * present * torch.relu(0.9 - lengths) ** 2
                       + 0.25 * (1 - present) * torch.relu(lengths - 0.1) ** 2).mean()
    assert official_margin.item() == pytest.approx(0.05 * margin_loss(lengths, targets).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# the official data stream and schedule


def test_all_shifts_order_is_a_local_permutation():
    generator = torch.Generator().manual_seed(0)
    order = all_shifts_order(100_000, generator, buffer=5000)
    assert torch.equal(order.sort().values, torch.arange(100_000))
    delay = order - torch.arange(100_000)  # how far each record moved
    assert 2000 < delay.abs().float().mean() < 8000  # about the buffer's size, not the whole stream
    # the first records out are early records: the stream keeps its file order, mixed locally
    assert order[:1000].float().mean() < 10_000


def test_all_shifts_epochs_show_every_image_in_all_25_shifts_per_pass():
    images = torch.zeros(8, 1, 28, 28)
    images[:, 0, 14, 14] = 1.0  # a dot in the middle: its position tells the shift
    labels = torch.arange(8)
    seen = set()
    for epoch in range(25):  # one pass: 25 epochs of 8 records
        x, y = epoch_data(images, labels, seed=1, epoch=epoch, max_shift=2, augmentation="all-shifts")
        assert len(x) == 8
        for image, label in zip(x, y):
            row, col = divmod(int(image[0].flatten().argmax()), 28)
            seen.add((int(label), row - 14, col - 14))
    assert seen == {(i, dy, dx) for i in range(8) for dy in range(-2, 3) for dx in range(-2, 3)}


def test_step_schedule_is_smooth_and_floored():
    official = TrainConfig.from_recipe("official")
    assert learning_rate(official, epoch=5, step=0) == 1e-3
    assert learning_rate(official, epoch=5, step=1000) == pytest.approx(1e-3 * 0.96 ** 0.5)
    assert learning_rate(official, epoch=0, step=10**7) == 1e-6  # the floor
    paper = TrainConfig()
    assert learning_rate(paper, epoch=3, step=999) == pytest.approx(1e-3 * 0.95 ** 3)


def test_validation_split_is_the_first_training_images():
    data = load_dataset("mnist", train_subset=300, test_subset=10, validation_size=100)
    full = load_dataset("mnist", train_subset=300, test_subset=10)
    assert (data.validation_images == full.train_images[:100]).all()
    assert (data.train_images == full.train_images[100:]).all() and len(data.train_images) == 200


# ---------------------------------------------------------------------------------------------
# selection and the ablation's arithmetic


def test_selection_takes_the_lowest_validation_error_latest_of_ties():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "validation_error": [0.5, 0.4, 0.4, 0.6],
                            "test_error": [0.45, 0.38, 0.36, 0.30], "test_accuracy": [0.9955, 0.9962, 0.9964, 0.997]})
    chosen = selection(history)
    assert (chosen["selected_epoch"], chosen["selected_test_error"]) == (3, 0.36)
    assert (chosen["final_test_error"], chosen["best_epoch"], chosen["best_test_error"]) == (0.30, 4, 0.30)
    no_split = selection(history.assign(validation_error=None))
    assert no_split["selected_test_error"] is None and no_split["final_test_error"] == 0.30


def test_difference_interval_by_hand():
    difference, low, high = S.difference_interval([0.30, 0.32, 0.34], [0.36, 0.38, 0.40])
    # pooled std 0.02, se = 0.02·sqrt(2/3), t(0.975, 4) = 2.776
    half = 2.776 * 0.02 * math.sqrt(2 / 3)
    assert difference == pytest.approx(-0.06)
    assert (low, high) == (pytest.approx(-0.06 - half), pytest.approx(-0.06 + half))


def _logged(seed: int, final_errors: list[float], validation_errors: list[float] | None = None, status="complete"):
    """A Run as read back from its folder, with the given test errors (%) per evaluation."""
    from capslib.core.runs import Run

    epochs = list(range(1, len(final_errors) + 1))
    history = pd.DataFrame({"epoch": epochs, "test_error": final_errors,
                            "test_accuracy": [1 - e / 100 for e in final_errors],
                            "validation_error": validation_errors or [None] * len(epochs),
                            "epoch_seconds": 1.0, "wall_seconds": [float(e) for e in epochs]})
    config = TrainConfig(seed=seed, validation_size=10_000 if validation_errors else 0)
    return Run(Path(f"run{seed}"), config, {"status": status, "sessions": [{}]}, history)


def test_comparison_is_against_the_first_group_on_final_and_selected_errors():
    base = [_logged(1, [0.50, 0.36], [0.9, 0.8]), _logged(2, [0.50, 0.38], [0.9, 0.8]),
            _logged(3, [0.50, 0.40], [0.9, 0.8])]
    lower = [_logged(1, [0.30, 0.31], [0.7, 0.9]), _logged(2, [0.32, 0.33], [0.7, 0.9]),
             _logged(3, [0.34, 0.35], [0.7, 0.9])]
    unfinished = [_logged(1, [0.10], [0.1], status="running")]
    higher = [_logged(1, [0.48]), _logged(2, [0.50])]
    table = S.comparison_table({"base": base, "lower": lower, "still training": unfinished, "higher": higher})
    assert list(table.runs_of) == ["base", "lower", "higher"]  # a group with no complete run is left out
    assert table.final_vs_base.iloc[2] == pytest.approx(0.49 - 0.38)  # against the first group, not the one before
    assert table.selected_mean.isna().iloc[2] and table.selected_vs_base.isna().iloc[2]  # no split: nothing selected
    assert table.final_vs_base.isna().iloc[0]
    difference, low, high = S.difference_interval([0.31, 0.33, 0.35], [0.36, 0.38, 0.40])
    assert (table.final_mean.iloc[1], table.final_vs_base.iloc[1]) == (pytest.approx(0.33), pytest.approx(-0.05))
    assert (table.final_vs_base_low.iloc[1], table.final_vs_base_high.iloc[1]) == (
        pytest.approx(low, abs=1e-3), pytest.approx(high, abs=1e-3))
    # selected: the first evaluation for `lower` (lowest validation error), the last for `base`
    assert table.selected_mean.iloc[1] == pytest.approx(0.32) and table.selected_mean.iloc[0] == pytest.approx(0.38)
    assert table.selected_vs_base.iloc[1] == pytest.approx(-0.06)
    readable = T.comparison_readable(table)
    assert readable["final vs the first (95% interval)"].iloc[1].startswith("**-0.05 (")  # bold: the interval excludes 0


def test_a_readable_comparison_rounds_once():
    # 0.35, 0.34, 0.37: sample std 0.0153, printed 0.02 (rounding it to 0.015 first would print 0.01)
    runs = [_logged(seed, [error]) for seed, error in ((1, 0.35), (2, 0.34), (3, 0.37))]
    readable = T.comparison_readable(S.comparison_table({"three seeds": runs}, digits=None))
    assert readable["final error (%)"].iloc[0] == "0.35 ± 0.02"


def test_pairwise_table_resolves_what_the_seeds_resolve():
    per_run = pd.DataFrame({
        "dataset": "mnist", "recipe": "paper", "validation_images": 10_000,
        "configuration": ["baseline CNN"] * 3 + ["routing 1, reconstruction"] * 3 + ["routing 3, reconstruction"] * 3,
        "final_test_error": [0.48, 0.50, 0.46, 0.35, 0.32, 0.38, 0.47, 0.44, 0.50],
        "selected_test_error": [0.5, 0.5, 0.5, 0.3, 0.3, 0.3, None, None, None]})
    table = S.pairwise_table(per_run)
    assert list(zip(table.configuration, table.other)) == [
        ("baseline CNN", "routing 1, reconstruction"), ("baseline CNN", "routing 3, reconstruction"),
        ("routing 1, reconstruction", "routing 3, reconstruction")]
    difference, low, high = S.difference_interval([0.48, 0.50, 0.46], [0.35, 0.32, 0.38])
    assert (table.final_difference[0], table.final_low[0], table.final_high[0]) == (
        pytest.approx(difference, abs=1e-3), pytest.approx(low, abs=1e-3), pytest.approx(high, abs=1e-3))
    readable = T.pairwise_readable(table)
    assert readable["final (95% interval)"][0].startswith("**+0.13")  # resolved: bold
    assert not readable["final (95% interval)"][1].startswith("**")    # +0.01: within the spread
    assert readable["selected on validation (95% interval)"][1] == "—"  # no selected error on one side


def test_ablation_declares_both_bases_and_every_component():
    configs = ablation_configs([1, 2])
    variants = [c.variant() for c in configs]
    assert len(configs) == 2 * 2 * (1 + len(COMPONENTS))
    assert set(variants) == {"paper", "official"} | {f"paper+{c}" for c in COMPONENTS} | {f"official-{c}" for c in COMPONENTS}
    assert all(c.validation_size == 10_000 and c.epochs == 60 for c in configs)
    assert len({run_name(c) for c in configs}) == len(configs)


def test_official_runs_take_300000_steps_and_table1_has_its_six_configurations():
    (official,) = official_configs([1])
    assert official.epochs * ((60_000 - official.validation_size) // official.batch_size) >= 300_000
    names = {run_name(c) for c in table1_configs([1])}
    assert names == {"mnist_baseline_seed1", "mnist_routing1_norecon_seed1", "mnist_routing1_recon_seed1",
                     "mnist_routing3_norecon_seed1", "mnist_routing3_recon_seed1", "fashion-mnist_routing3_recon_seed1"}


def test_official_60k_trains_300000_steps_on_every_training_image():
    (config,) = study_runs("official-60k", [1], Path("runs"), Path("results"))
    assert config.variant() == "official" and config.validation_size == 0
    assert config.epochs * (60_000 // config.batch_size) >= 300_000 > (config.epochs - 1) * (60_000 // config.batch_size)
    # a profile's held-out share does not apply: the study exists to train on all images
    (tiny,) = study_runs("official-60k", [1], Path("runs"), Path("results"), "tiny")
    assert tiny.validation_size == 0


def test_precision_runs_are_validateds_routing3_runs_in_strict_float32():
    # each precision run is named as its validated twin (speed is no part of a setup: a resumable change)
    table1 = {run_name(c, protocol("validated")): c for c in validated_configs([1, 2])}
    precision = precision_configs([1, 2])
    assert len(precision) == 2
    for config in precision:
        twin = table1[run_name(config, protocol("precision"))]
        assert config.speed == "fp32" != twin.speed
        assert {k: v for k, v in config.to_dict().items() if k != "speed"} == \
            {k: v for k, v in twin.to_dict().items() if k != "speed"}


def test_table1_official_is_every_other_row_at_the_official_studys_length():
    (official,) = official_configs([1])
    configs = table1_official_configs([1])
    rows = {(c.dataset, c.model, c.routing_iterations, c.reconstruction) for c in table1_configs([1])}
    assert {(c.dataset, c.model, c.routing_iterations, c.reconstruction) for c in configs} == \
        rows - {("mnist", "capsnet", 3, True)}
    for config in configs:
        assert config.variant() == "official"
        assert (config.epochs, config.validation_size, config.eval_every) == \
            (official.epochs, official.validation_size, official.eval_every)


# ---------------------------------------------------------------------------------------------
# sweeps of runs finished elsewhere (logs committed, checkpoints left on the GPU machine)


def _committed_logs(tmp_path: Path, study: str) -> Path:
    import shutil

    results = tmp_path / "results"
    shutil.copytree(REPO / "results" / study, results / study)
    return results


def test_runs_whose_logs_say_complete_are_done_without_their_checkpoints(tmp_path):
    results = _committed_logs(tmp_path, "official")
    configs = study_runs("official", [1, 2, 3], tmp_path / "runs", results)
    assert all(finished_run(c) is not None for c in configs)
    # a run asked for longer, or with another setup, is not the run those logs describe
    longer = TrainConfig.from_dict({**configs[0].to_dict(), "epochs": configs[0].epochs + 4})
    other = TrainConfig.from_dict({**configs[0].to_dict(), "lr": 5e-4})
    assert finished_run(longer) is None and finished_run(other) is None


def test_sweep_of_a_study_finished_elsewhere_trains_nothing_even_on_a_cpu(tmp_path):
    results = _committed_logs(tmp_path, "official")
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    done = subprocess.run([sys.executable, "-m", "capslib", "sweep", "official", "--runs-dir", str(tmp_path / "runs"),
                           "--results-dir", str(results), "--device", "auto"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 of 3 runs finished" in done.stdout
    assert not (tmp_path / "runs").exists()
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before


NO_OP_SWEEP = """
import multiprocessing, sys
from capslib.cli import main
pools = []
spawn = multiprocessing.get_context
multiprocessing.get_context = lambda *args: pools.append(args) or spawn(*args)
code = main(sys.argv[1:])
print(f"torch loaded: {'torch' in sys.modules}; process contexts asked for: {len(pools)}")
sys.exit(code)
"""


def test_a_finished_sweep_run_again_starts_no_process_and_loads_no_torch(tmp_path):
    """Run again, a finished sweep (--jobs 2) decides from its logs alone, before anything else: it used
    to start a process per run, each loading torch to find its run done (31 s for a tiny sweep of 6 runs
    on 2 CPU cores; now under 2 s)."""
    results = _committed_logs(tmp_path, "official")
    done = subprocess.run([sys.executable, "-c", NO_OP_SWEEP, "sweep", "official", "--jobs", "2", "--runs-dir",
                           str(tmp_path / "runs"), "--results-dir", str(results)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 of 3 runs finished" in done.stdout
    assert "torch loaded: False; process contexts asked for: 0" in done.stdout


def test_a_seed_named_twice_is_refused_in_one_line(tmp_path):
    """--seeds 1,1 trained one run twice, into one folder: refused before anything starts (--list: were it
    not refused, the sweep would only list its runs, not train them)."""
    refused = subprocess.run([sys.executable, "-m", "capslib", "sweep", "table1", "--seeds", "1,1", "--profile", "tiny",
                              "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), "--list"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("capslib sweep: error: --seeds") and "1,1" in line and "twice" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--runs-dir", "--results-dir"])
def test_a_sweep_folder_that_is_a_file_is_refused_in_one_line_naming_its_flag(tmp_path, flag):
    """Each run used to fail on its own (exit 1), naming its --ckpt-dir or --logs-dir, not the flag given."""
    from helpers import cli, one_line

    folders = {"--runs-dir": tmp_path / "runs", "--results-dir": tmp_path / "results"}
    listed = cli("sweep", "table1", "--profile", "tiny", "--seeds", "1", *[a for f, d in folders.items() for a in (f, d)],
                 "--list")[1].split()
    (tmp_path / "a_file").write_text("kept\n")
    for given in (tmp_path / "a_file", tmp_path / "a_file" / "below"):
        for extra in (["--list"], ["--only", Path(listed[0]).name, "--device", "cpu"]):
            argv = {**folders, flag: given}
            code, out, err = cli("sweep", "table1", "--profile", "tiny", "--seeds", "1",
                                 *[a for f, d in argv.items() for a in (f, d)], *extra)
            assert code == 2 and out == ""
            assert one_line(err).startswith(f"capslib sweep: error: {flag} {given}: ") and "is a file" in err
    assert (tmp_path / "a_file").read_text() == "kept\n" and not any(d.exists() for d in folders.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_full_size_sweep_without_a_gpu_is_refused_in_one_line(tmp_path):
    refused = subprocess.run([sys.executable, "-m", "capslib", "sweep", "precision", "--runs-dir", str(tmp_path / "runs"),
                              "--results-dir", str(tmp_path / "results")], capture_output=True, text=True, cwd=REPO,
                             timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "3 of 3 runs are not finished" in refused.stderr and "--device cpu" in refused.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_multimnist_study_scores_100_test_pairs_per_image_and_train_keeps_the_papers_1000(tmp_path):
    # the study's scoring must fit a time-limited job (studies.MULTIMNIST_TEST_PAIRS); `capslib train`
    # keeps the paper's 10M pairs
    full = study_runs("multimnist", [1, 2], tmp_path / "runs", tmp_path / "results")
    assert len(full) == 4 and {c.test_pairs for c in full} == {100}
    assert TrainConfig().test_pairs == 1000 == config_from_args(build_parser().parse_args(["train"])).test_pairs
    tiny = study_runs("multimnist", [1], tmp_path / "runs", tmp_path / "results", "tiny")
    assert {c.test_pairs for c in tiny} == {2}                                  # the profile's size
    asked = study_runs("multimnist", [1], tmp_path / "runs", tmp_path / "results", test_pairs=1000)
    assert {c.test_pairs for c in asked} == {1000}                              # sweep --test-pairs 1000
