"""Training curves from metrics.jsonl, and `vipet curves`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vipet.cli import main
from vipet.errors import InputError
from vipet.train.curves import curves, plot_curves


def _write(folder: Path) -> Path:
    rows = [
        {"step": s, "split": "train", "loss/total": 5.0 / s, "loss/lm": 4.0 / s, "lr": 1e-3}
        for s in range(1, 11)
    ]
    rows += [{"step": 5, "split": "val", "loss/total": 1.5, "loss/lm": 1.0}]
    path = folder / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_curves_group_parts_by_split(tmp_path) -> None:
    data = curves([json.loads(line) for line in _write(tmp_path).read_text().splitlines()])
    assert set(data) == {"total", "lm"}
    assert data["lm"]["train"][0] == list(range(1, 11))
    assert data["total"]["val"] == ([5], [1.5])


def test_plot_writes_a_png_and_the_cli_says_where(tmp_path, capsys) -> None:
    _write(tmp_path)
    png = plot_curves(tmp_path / "metrics.jsonl")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["curves", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file() and "c.png" in capsys.readouterr().out


def test_bad_metrics_are_one_line_errors(tmp_path, capsys) -> None:
    with pytest.raises(InputError, match=r"no metrics\.jsonl"):
        plot_curves(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    assert main(["curves", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 2 is not JSON" in err
    assert not (tmp_path / "curves.png").exists()
