"""The examples run end to end (smoke tests with tiny settings; their defaults take minutes)."""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = {
    "toy2d.py": [
        "--n-iters",
        "3",
        "--batch-size",
        "16",
        "--hidden",
        "8",
        "--n-samples",
        "16",
        "--num-steps",
        "3",
    ],
    "custom_sde.py": [
        "--n-iters",
        "3",
        "--batch-size",
        "16",
        "--hidden",
        "8",
        "--n-samples",
        "16",
        "--num-steps",
        "5",
        "--n-eval",
        "8",
    ],
    "likelihood_2d.py": [
        "--n-iters",
        "3",
        "--batch-size",
        "16",
        "--hidden",
        "8",
        "--n-eval",
        "8",
        "--grid",
        "4",
    ],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_example_runs_and_saves_its_figure(tmp_path, capsys, name):
    main = runpy.run_path(str(EXAMPLES / name))["main"]
    out = tmp_path / "figure.png"
    main([*TINY[name], "--out", str(out)])
    assert out.stat().st_size > 0
    assert f"saved {out}" in capsys.readouterr().out


def test_every_example_has_a_smoke_test():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(TINY)
