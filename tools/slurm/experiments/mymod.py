import os, socket, sys, time


def work(i: int, seconds: float = 1.0) -> dict:
    time.sleep(seconds)
    keys = ["SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_CPUS_PER_TASK",
            "SLURM_JOB_PARTITION", "SLURM_MEM_PER_NODE", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "MY_SETUP_VAR"]
    return {"i": i, "host": socket.gethostname(), "python": sys.executable, "cwd": os.getcwd(),
            "env": {k: os.environ.get(k) for k in keys}}
