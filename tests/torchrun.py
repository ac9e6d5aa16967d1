"""Launch a test worker module on two CPU processes with torchrun (DDP over gloo), as the distributed tests do."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch_two_processes(module: str, *args: str, timeout: float = 600) -> None:
    """Run ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m MODULE ARGS`` from the repository
    root on one torch thread per process; fail the test with the end of stderr unless it exits 0.

    ``accelerate launch --num_processes 2 --cpu`` is not used: accelerate 1.15 runs a single process for it.
    """
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", module]
    result = subprocess.run(
        [*command, *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
