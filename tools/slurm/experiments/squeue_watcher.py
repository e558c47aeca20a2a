"""submitit's job.state/done() ask sacct, which needs accounting (slurmdbd). Without it every state is UNKNOWN
and done() is True only once a result pickle exists (never, for a cancelled or killed task). This watcher asks
squeue instead (it knows a finished job for MinJobAge seconds after its end)."""
import submitit
from submitit.slurm import slurm as _slurm


class SqueueInfoWatcher(_slurm.SlurmInfoWatcher):
    def _make_command(self):
        to_check = sorted({x.split("_")[0] for x in self._registered - self._finished})
        if not to_check:
            return None
        # same "JobID|State|NodeList" table as `sacct --parsable2`, so read_info parses it as is;
        # `|| true`: squeue fails on a job id it has forgotten
        return ["sh", "-c", "echo 'JobID|State|NodeList'; squeue -h -t all -o '%i|%T|%N' -j "
                + ",".join(to_check) + " 2>/dev/null || true"]


def use_squeue(delay_s: int = 10) -> None:
    _slurm.SlurmJob.watcher = SqueueInfoWatcher(delay_s=delay_s)
