"""`python -m snakemake` for tests/test_cluster.py, with one change: the wait between two
rounds of job status checks never grows past MAX_POLL_S.

The Slurm executor (snakemake-executor-plugin-slurm 2.x) adds 10 s to that wait after every
round that finds no job finished, up to 180 s, and no setting turns this off: on a real cluster
it spares slurmctld, here it left each ~10 s test job unnoticed for up to 20 s after it ended.
Everything else runs as it is: sbatch, the status query (squeue) and the reading of its states,
cancelling on Ctrl-C, and the jobs themselves (plain `python -m snakemake` inside Slurm).
If snakemake-interface-executor-plugins (not pinned) no longer has that property, it runs
Snakemake unchanged: the test then only takes longer.
"""
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

MAX_POLL_S = 1  # tests/cluster/profile sets slurm-init-seconds-before-status-checks to this

_wait = getattr(RemoteExecutor, "next_seconds_between_status_checks", None)
if isinstance(_wait, property) and _wait.fset is not None:
    RemoteExecutor.next_seconds_between_status_checks = _wait.setter(
        lambda self, seconds: _wait.fset(self, min(seconds, MAX_POLL_S)))

if __name__ == "__main__":
    from snakemake.cli import main

    main()
