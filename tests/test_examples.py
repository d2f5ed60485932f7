"""The examples run end to end (smoke tests with tiny settings; their defaults take minutes), and
refuse their own bad arguments before any work."""

import os
import runpy
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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


# (the script and its arguments, what the last line of stderr must name)
BAD_ARGUMENTS = [
    (["toy2d.py", "--n-iters", "0"], "--n-iters must be an integer >= 1; got 0"),
    (["custom_sde.py", "--n-samples", "1"], "--n-samples must be an integer >= 2; got 1"),
    (["likelihood_2d.py", "--out", "/proc/scoresde-test/x.png"], "--out cannot be written"),
]


def test_the_examples_refuse_their_own_bad_arguments_before_training():
    """Run as a user runs them, two at a time: argparse's usage, then one line, status 2."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent)}

    def run(argv):
        command = [sys.executable, str(EXAMPLES / argv[0]), *argv[1:]]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, [argv for argv, _ in BAD_ARGUMENTS]))
    for (argv, expected), done in zip(BAD_ARGUMENTS, results, strict=True):
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.startswith("usage: ") and "Traceback" not in done.stderr
        assert expected in done.stderr.splitlines()[-1], done.stderr
