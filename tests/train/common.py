"""What the training tests share: the tiny grid and launching `run_fit.py` under
torchrun on two CPU processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from vipet.config import to_dict
from vipet.train.config import TrainConfig

GRID = (8, 32, 32)
SCRIPT = Path(__file__).with_name("run_fit.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_fit(
    cfg: TrainConfig, tok_dir: Path, data: tuple[Path, Path], until: int = 0
) -> subprocess.CompletedProcess:
    """`fit` of ``cfg`` in two gloo processes (``until``: stop after that step); fails the
    test with the processes' stderr when torchrun does not exit 0."""
    config = Path(cfg.out_dir).with_suffix(".json")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(to_dict(cfg)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(SCRIPT),
        str(config),
        str(tok_dir),
        *map(str, data),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VIPET_TEST_SLEEP_AFTER_STEP", None)
    env.pop("VIPET_TEST_UNTIL", None)
    if until:
        env["VIPET_TEST_UNTIL"] = str(until)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res
