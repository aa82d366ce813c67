"""Run `fit` from a JSON config in a fresh process (used by the trainer tests for the
SIGKILL and torchrun cases).

Usage: python tests/train/run_fit.py CONFIG_JSON TOKENIZER_DIR DATA_ROOT CACHE_DIR

``VIPET_TEST_SLEEP_AFTER_STEP=N`` makes the run print ``step N done`` and sleep for a
long time after step N, so a test can kill it there. ``VIPET_TEST_UNTIL=N`` stops the
run after step N (`fit`'s ``until``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from vipet.config import from_dict
from vipet.data.tokenizer import load_tokenizer
from vipet.train.config import TrainConfig
from vipet.train.trainer import fit


def main(argv: list[str]) -> None:
    config, tok_dir, data_root, cache_dir = argv
    cfg = from_dict(TrainConfig, json.loads(Path(config).read_text(encoding="utf-8")))
    sleep_after = int(os.environ.get("VIPET_TEST_SLEEP_AFTER_STEP", "0"))
    until = int(os.environ["VIPET_TEST_UNTIL"]) if "VIPET_TEST_UNTIL" in os.environ else None

    def on_step(state, log) -> None:
        if sleep_after and state.step == sleep_after:
            print(f"step {state.step} done", flush=True)
            time.sleep(600)

    fit(cfg, load_tokenizer(tok_dir), data_root, cache_dir, on_step=on_step, until=until)


if __name__ == "__main__":
    main(sys.argv[1:])
