"""Poll squeue for a job (array) and print each state change with its time (until nothing pending/running)."""
import subprocess, sys, time
jid, out = sys.argv[1], sys.argv[2]
last, t0, quiet_since = {}, time.time(), None
with open(out, "w") as f:
    while True:
        r = subprocess.run(["squeue", "-h", "-t", "all", "-j", jid, "-o", "%i|%T|%r|%S"], capture_output=True, text=True)
        now = time.time()
        active = False
        for line in r.stdout.split():
            i, st, reason, start = line.split("|")
            active |= st in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED")
            if last.get(i) != (st, reason):
                last[i] = (st, reason)
                f.write(f"{now:.2f} {now - t0:7.1f}s {i:8s} {st:12s} {reason} start={start}\n"); f.flush()
        if not active and last:
            quiet_since = quiet_since or now
            if now - quiet_since > 3: break
        else:
            quiet_since = None
        time.sleep(0.5)
