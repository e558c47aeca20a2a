"""Print a run_dir's events.jsonl relative to the first event."""
import json, sys
for path in sys.argv[1:]:
    evs = [json.loads(l) for l in open(path)]
    t0 = evs[0]["t"]
    print(path)
    for e in evs:
        print(f"  {e['t'] - t0:7.1f}s {e['ev']:10s} step={e['step']:<4} job={e['job']} task={e['task']} restarts={e['restarts']}")
