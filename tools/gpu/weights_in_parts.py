"""Bring a trained model back from a machine that returns files of limited size: the weights-only
checkpoint (no Adam moments) of the complete run of STUDY with the lowest final test error among the runs
of MODEL, in parts of at most PART_MIB, as OUT/weights.NN, with OUT/weights.txt naming the run.

    python3 tools/gpu/weights_in_parts.py STUDY MODEL OUT [PART_MIB]
    cat weights.?? > runs/STUDY/<run>/last.pt   # here: a checkpoint that figures and evaluate read

(The lowest final error picks the model a notebook's figures show, as notebook.lowest_final_error does:
selected on the test set, for figures only.)"""
import json
import sys
from pathlib import Path

import torch

study, model, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
part = int(float(sys.argv[4]) * 2**20) if len(sys.argv) > 4 else 15 * 2**20
finished = []
for path in Path("results", study).glob("*/run.json"):
    info = json.loads(path.read_text())
    if info.get("status") == "complete" and info["config"]["model"] == model:
        finished.append((info["summary"]["final_test_error"], path.parent.name))
if not finished:
    sys.exit(f"no complete {model} run in results/{study}")
error, run = min(finished)
checkpoint = torch.load(Path("runs", study, run, "last.pt"), map_location="cpu", weights_only=True)
checkpoint.pop("optimizer", None)
checkpoint.pop("rng", None)
whole = Path("/tmp") / f"{run}.pt"
torch.save(checkpoint, whole)
data = whole.read_bytes()
out.mkdir(parents=True, exist_ok=True)
for i in range(0, len(data), part):
    (out / f"weights.{i // part:02d}").write_bytes(data[i:i + part])
(out / "weights.txt").write_text(f"{study}/{run} final test error {error} bytes {len(data)}\n")
print(f"weights of {study}/{run} ({len(data):,} bytes) in {-(-len(data) // part)} parts")
