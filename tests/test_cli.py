"""The command line: the tutorial's numbers and figures, and one-line user errors."""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

import streamcausal
from streamcausal import cli

FIGURES = [
    "connectivity.png",
    "activity.png",
    "standard_vs_perturbed.png",
    "true_vs_estimated_neuron1.png",
    "true_vs_estimated_all.png",
    "summary.png",
]
REPO = Path(__file__).resolve().parents[1]


def test_tutorial_prints_course_numbers_and_writes_figures(tmp_path, capsys):
    out = tmp_path / "figs" / "nested"
    assert cli.main(["tutorial", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "0.9907195190159408" in captured.out
    assert "0.98759340437835" in captured.out
    lines = captured.out.splitlines()
    assert any(line.startswith("two-neuron difference in means") for line in lines)
    assert any("A[:, 1]" in line for line in lines)
    for name in FIGURES:
        path = out / name
        assert path.stat().st_size > 0
        assert matplotlib.image.imread(path).ndim == 3
        assert str(path) in captured.out


def test_tutorial_subprocess(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "streamcausal", "tutorial", "--out", str(tmp_path),
         "--neurons", "4", "--steps", "2e2"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "0.9907195190159408" in result.stdout
    assert (tmp_path / "summary.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["tutorial", "--out", "X", "--neurons", "0"], "--neurons"),
        (["tutorial", "--out", "X", "--neurons", "abc"], "'abc'"),
        (["tutorial", "--out", "X", "--steps", "5.5"], "--steps"),
        (["tutorial", "--out", "X", "--selected-neuron", "6"], "--selected-neuron"),
        (["tutorial"], "--out"),
        (["frobnicate"], "frobnicate"),
        ([], "COMMAND"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, words, tmp_path, capsys):
    argv = [str(tmp_path / "x") if a == "X" else a for a in argv]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("streamcausal: error: ")
    assert words in err_lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert cli.main(["tutorial", "--out", str(target), "--steps", "10"]) == 2
    assert "--out" in capsys.readouterr().err


def test_subprocess_user_error_has_no_traceback(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "streamcausal", "tutorial", "--out", str(tmp_path),
         "--neurons", "abc"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("text, value", [("5000", 5000), ("5_000", 5000), ("5e3", 5000),
                                         (" 12 ", 12), ("2.0", 2)])
def test_count_parsing(text, value):
    assert cli._count(2)(text) == value


@pytest.mark.parametrize("text", ["abc", "5.5", "1", "-3", "inf", "nan", ""])
def test_count_parsing_rejects(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="integer >= 2"):
        cli._count(2)(text)


def test_help_shows_examples(capsys):
    assert cli.main(["tutorial", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert streamcausal.__version__ in capsys.readouterr().out


def test_subcommand_table_drives_the_parser():
    parser = cli._build_parser()
    assert set(cli._SUBCOMMANDS) == {"tutorial"}
    assert parser.parse_args(["tutorial", "--out", "d", "--steps", "5_000"]).steps == 5000
