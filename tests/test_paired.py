"""Paired comparisons on the same test images, from runs' misses records (capslib/study/paired.py)."""

import math

import numpy as np
import pytest

from capslib.core.config import TrainConfig
from capslib.core.layout import run_name
from capslib.core.runs import misses_rows, read_run, write_metrics, write_misses, write_run_info
from capslib.study import paired as P

IMAGES = 10_000


def logged_run(root, wrong: list[int], seed: int, records: bool = True, **config):
    """A finished run folder whose last evaluation missed the test images `wrong` (all labelled 0,
    predicted 1)."""
    config = TrainConfig(seed=seed, **config)
    folder = root / run_name(config)
    write_run_info(folder, {"config": config.to_dict(), "status": "complete", "test_images": IMAGES, "sessions": []})
    write_metrics(folder, [{"epoch": 1, "test_error": 100 * len(wrong) / IMAGES, "test_accuracy": 1 - len(wrong) / IMAGES}])
    if records:
        index = np.array(wrong, dtype=int)
        write_misses(folder, [misses_rows("last", 1, {"test": {"index": index, "label": np.zeros_like(index),
                                                               "predicted": np.ones_like(index)}})])
    return read_run(folder)


def test_a_difference_that_seeds_cannot_see_is_seen_image_by_image(tmp_path):
    # B misses A's 30 images plus 10 more, for every seed: 0.1 points, every discordant image one way
    shared = list(range(30))
    a = [logged_run(tmp_path / "a", shared, seed) for seed in (1, 2, 3)]
    b = [logged_run(tmp_path / "b", shared + list(range(100 + seed, 110 + seed)), seed, routing_iterations=1)
         for seed in (1, 2, 3)]
    result = P.compare(a, b)
    assert result["seeds"] == "1/2/3" and result["examples"] == IMAGES
    assert result["difference"] == pytest.approx(-0.1)
    assert result["only_a_right"] == 30 and result["only_b_right"] == 0
    assert result["mcnemar_p"] == pytest.approx(2 / 2 ** 30)
    assert result["difference_low"] < -0.1 / 2 and result["difference_high"] < 0  # the interval excludes 0


def test_runs_that_disagree_both_ways_equally_show_no_difference(tmp_path):
    a = [logged_run(tmp_path / "a", list(range(0, 20)), 1)]
    b = [logged_run(tmp_path / "b", list(range(10, 30)), 1, routing_iterations=1)]
    result = P.compare(a, b)
    assert result["difference"] == 0 and result["only_a_right"] == result["only_b_right"] == 10
    assert result["mcnemar_p"] == 1.0
    assert result["difference_low"] < 0 < result["difference_high"]


def test_the_bootstrap_interval_matches_the_normal_one_of_a_paired_difference():
    rng = np.random.default_rng(1)
    a = rng.random((1, IMAGES)) < 0.02
    b = rng.random((1, IMAGES)) < 0.02
    d = a[0].astype(float) - b[0]
    half = 1.96 * 100 * d.std() / math.sqrt(IMAGES)
    low, high = P.bootstrap_interval(a, b)
    centre = 100 * d.mean()
    assert low == pytest.approx(centre - half, abs=0.15 * half) and high == pytest.approx(centre + half, abs=0.15 * half)
    assert P.bootstrap_interval(a, b) == (low, high)  # a fixed resampling


def test_mcnemar_exact_values():
    assert P.mcnemar_p(0, 0) == 1.0
    assert P.mcnemar_p(5, 5) == 1.0
    assert P.mcnemar_p(0, 5) == pytest.approx(2 / 32)
    assert P.mcnemar_p(1, 9) == pytest.approx(2 * (1 + 10) / 1024)


def test_runs_without_records_or_without_a_partner_seed_are_left_out(tmp_path):
    a = [logged_run(tmp_path / "a", [1, 2], 1), logged_run(tmp_path / "a", [1], 2),
         logged_run(tmp_path / "a", [3], 3, records=False)]
    b = [logged_run(tmp_path / "b", [1], 1, routing_iterations=1), logged_run(tmp_path / "b", [2], 3, routing_iterations=1)]
    assert P.compare(a, b)["seeds"] == "1"
    assert P.compare(a[2:], b) is None
    assert P.paired_table({"x": ("A", a[2:], "B", b)}).empty


def test_the_hard_core_is_what_every_run_of_every_configuration_misses(tmp_path):
    a = [logged_run(tmp_path / "a", [1, 2, 3], 1), logged_run(tmp_path / "a", [1, 2, 4], 2)]
    b = [logged_run(tmp_path / "b", [2, 3, 9], 1, routing_iterations=1)]
    table, core = P.hard_core({"A": a, "B": b, "none": []})
    assert core == [2]
    rows = table.set_index("configuration")
    assert list(rows.index) == ["A", "B"]
    assert (rows.loc["A", "missed_by_every_seed"], rows.loc["A", "seeds_disagree"], rows.loc["A", "missed_by_any_seed"]) == (2, 2, 4)
    assert rows.loc["B", "seeds_disagree"] == 0


def test_the_papers_ordering_compares_each_row_with_the_one_the_paper_puts_below_it(tmp_path):
    runs = [logged_run(tmp_path, [1, 2], 1, routing_iterations=3, reconstruction=True),
            logged_run(tmp_path, [1, 2, 3], 1, routing_iterations=1, reconstruction=True),
            logged_run(tmp_path, [1], 2, routing_iterations=1, reconstruction=True)]
    comparisons, groups = P.paper_ordering(runs, recipe="paper")
    assert list(comparisons) == ["routing 3, reconstruction − routing 1, reconstruction",
                                 "routing 1, reconstruction − routing 1, no reconstruction",
                                 "routing 1, no reconstruction − routing 3, no reconstruction",
                                 "routing 3, no reconstruction − baseline CNN"]
    (row,) = P.paired_table(comparisons).to_dict("records")  # only the first pair has runs of one seed
    assert row["a"] == "routing 3, reconstruction" and row["difference"] == pytest.approx(-0.01)
    assert [len(g) for g in groups.values()] == [1, 2, 0, 0, 0]
    assert P.paper_ordering(runs, recipe="official")[1]["routing 3, reconstruction"] == []  # another recipe's
