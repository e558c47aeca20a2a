"""Comparisons of runs on the same test images, from each run's record of the images it got wrong
(misses.csv.gz, core/runs.py).

Every comparison elsewhere in the study is a two-sample t over seeds (summaries.difference_interval):
with 3 + 3 seeds it cannot see differences of a few hundredths of a point. But runs of MNIST score the
same 10,000 test images, and most images are right (or wrong) for every run; only the images that two
configurations disagree on carry information about their difference. Here, two sets of runs (the
seeds of configuration A and of B) are compared image by image:

    difference   mean error of A minus mean error of B (percentage points), each averaged over its seeds
    interval     a paired bootstrap over test images (BOOTSTRAP_SAMPLES resamples of the test set, the
                 same resample for every run of both sets): the test set is the sample that a new test
                 set would redraw, while the seeds are kept as they are. It keeps the correlation of
                 an image's outcomes across runs (a hard image is hard for every seed), which McNemar's
                 test pooled over seeds ignores.
    McNemar      the exact two-sided test on the discordant (seed pair, image) outcomes pooled over the
                 seed pairs: A right and B wrong against A wrong and B right. It counts the same image
                 once per seed pair, as if independent: read its p-value beside the interval, not alone.

A seed pair is (A's run of seed s, B's run of seed s); runs without a partner of the same seed, or
without records (trained before runs recorded them), are left out and counted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.runs import Run, read_misses

BOOTSTRAP_SAMPLES = 4000
BOOTSTRAP_SEED = 0  # a fixed resampling: the same tables every time they are rebuilt


def missed(run: Run, evaluation: str = "last", split: str = "test") -> np.ndarray | None:
    """A boolean array over the run's test examples: True where the run got it wrong at `evaluation`
    (last or selected); None for a run without records."""
    misses = read_misses(run.folder)
    if misses is None:
        return None
    chosen = misses[(misses.evaluation == evaluation) & (misses.set == split)]
    wrong = np.zeros(run.info["test_images"] * (run.config.test_pairs if run.config.dataset == "multimnist" else 1),
                     dtype=bool)
    wrong[chosen["index"].to_numpy(dtype=int)] = True
    return wrong


def seed_pairs(a: list[Run], b: list[Run], evaluation: str = "last") -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The miss arrays (seeds × examples) of the runs of A and B paired by seed, and the seeds."""
    b_by_seed = {run.config.seed: run for run in b}
    rows_a, rows_b, seeds = [], [], []
    for run in sorted(a, key=lambda r: r.config.seed):
        partner = b_by_seed.get(run.config.seed)
        if partner is None:
            continue
        wrong_a, wrong_b = missed(run, evaluation), missed(partner, evaluation)
        if wrong_a is None or wrong_b is None or len(wrong_a) != len(wrong_b):
            continue
        rows_a.append(wrong_a)
        rows_b.append(wrong_b)
        seeds.append(run.config.seed)
    if not seeds:
        return np.zeros((0, 0), bool), np.zeros((0, 0), bool), []
    return np.stack(rows_a), np.stack(rows_b), seeds


def mcnemar_p(only_a_right: int, only_b_right: int) -> float:
    """Exact two-sided McNemar p-value: the binomial(n, 1/2) probability of a split at least as uneven."""
    n = only_a_right + only_b_right
    if n == 0:
        return 1.0
    k = min(only_a_right, only_b_right)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_interval(wrong_a: np.ndarray, wrong_b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile interval of mean error(A) − mean error(B) (points), resampling test examples."""
    per_example = wrong_a.mean(axis=0) - wrong_b.mean(axis=0)  # each example's difference, averaged over seeds
    informative = np.flatnonzero(per_example)                  # only these move the difference
    n = len(per_example)
    rng = np.random.default_rng(seed)
    # a resample of n examples, counted per informative example: binomial draws, one column at a time
    # would be exact but slow; the multinomial over (informative..., the rest) is the same distribution
    probabilities = np.append(np.full(len(informative), 1 / n), 1 - len(informative) / n)
    chunk = max(1, 20_000_000 // (len(informative) + 1))  # resamples at a time: ~160 MB of counts at most
    differences = np.concatenate([100 * rng.multinomial(n, probabilities, size=min(chunk, samples - done))[:, :-1]
                                  @ per_example[informative] / n for done in range(0, samples, chunk)])
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


COLUMNS = ["comparison", "a", "b", "evaluation", "seeds", "examples", "a_error", "b_error", "difference",
           "difference_low", "difference_high", "only_a_right", "only_b_right", "mcnemar_p"]


def compare(a: list[Run], b: list[Run], evaluation: str = "last") -> dict | None:
    """A against B on the same examples (see the module doc); None when no seed pair has records."""
    wrong_a, wrong_b, seeds = seed_pairs(a, b, evaluation)
    if not seeds:
        return None
    low, high = bootstrap_interval(wrong_a, wrong_b)
    only_a_right = int((~wrong_a & wrong_b).sum())
    only_b_right = int((wrong_a & ~wrong_b).sum())
    return {"evaluation": evaluation, "seeds": "/".join(map(str, seeds)), "examples": wrong_a.shape[1],
            "a_error": 100 * wrong_a.mean(), "b_error": 100 * wrong_b.mean(),
            "difference": 100 * (wrong_a.mean() - wrong_b.mean()), "difference_low": low, "difference_high": high,
            "only_a_right": only_a_right, "only_b_right": only_b_right,
            "mcnemar_p": mcnemar_p(only_a_right, only_b_right)}


def paired_table(comparisons: dict[str, tuple[str, list[Run], str, list[Run]]],
                 evaluation: str = "last") -> pd.DataFrame:
    """One row per comparison with records: name → (label of A, A's runs, label of B, B's runs)."""
    rows = []
    for name, (label_a, a, label_b, b) in comparisons.items():
        result = compare(a, b, evaluation)
        if result is not None:
            rows.append({"comparison": name, "a": label_a, "b": label_b, **result})
    return pd.DataFrame(rows, columns=COLUMNS)


def hard_core(groups: dict[str, list[Run]], evaluation: str = "last") -> tuple[pd.DataFrame, list[int]]:
    """Which test examples the configurations miss: per configuration (its runs with records), how many
    examples all its seeds miss, how many some but not all miss (the seeds disagree), and how many any
    misses; and the hard core, the examples that every run of every configuration misses."""
    rows, every = [], None
    for label, runs in groups.items():
        arrays = [w for w in (missed(run, evaluation) for run in runs) if w is not None]
        if not arrays or len({len(w) for w in arrays}) > 1:
            continue
        wrong = np.stack(arrays)
        all_seeds, any_seed = wrong.all(axis=0), wrong.any(axis=0)
        rows.append({"configuration": label, "runs": len(arrays), "missed_by_every_seed": int(all_seeds.sum()),
                     "seeds_disagree": int((any_seed & ~all_seeds).sum()), "missed_by_any_seed": int(any_seed.sum())})
        if every is None or len(every) == len(all_seeds):  # configurations scored on one test set
            every = all_seeds if every is None else every & all_seeds
    table = pd.DataFrame(rows, columns=["configuration", "runs", "missed_by_every_seed", "seeds_disagree",
                                        "missed_by_any_seed"])
    return table, [] if every is None else np.flatnonzero(every).tolist()


def paper_ordering(runs: list[Run], recipe: str = "official", dataset: str = "mnist") -> tuple[dict, dict]:
    """Table 1's rows in the paper's order (lowest reported error first), each compared with the row the
    paper puts just below it: whether the paper's ordering holds under one protocol, image by image.
    Returns the comparisons (for paired_table) and the groups (for hard_core) of `recipe`'s runs."""
    from . import paper

    order = sorted(paper.TABLE1, key=lambda configuration: paper.TABLE1[configuration][0])
    groups = {label: [r for r in runs if r.label == label and r.config.variant() == recipe and r.config.dataset == dataset]
              for label in order}
    comparisons = {f"{better} − {worse}": (better, groups[better], worse, groups[worse])
                   for better, worse in zip(order, order[1:])}
    return comparisons, groups
