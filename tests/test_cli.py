"""The console script's own behaviour: help texts, --version, options refused before any model
loads, and what ``defectcam propose`` says. Its answers are tests/test_contract.py's."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from defectcam import __version__
from defectcam.cli import COMMANDS, HelpFormatter, build_parser, main
from tests.conftest import REPO


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_a_help_line_with_its_default() -> None:
    for name, parser in _subparsers(build_parser()).items():
        formatter = HelpFormatter(name)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            text = formatter._expand_help(action) if action.help else ""
            assert text, f"{name} {action.option_strings[0]} has no help"
            assert action.required or re.search(r"default|required", text), (
                f"{name} {action.option_strings[0]}: {text!r} does not say its default")
    assert set(_subparsers(build_parser())) == set(COMMANDS)


def _help(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "defectcam.cli", *args, "--help"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_texts_read_cleanly() -> None:
    evaluate = _help("evaluate")
    assert "--out runs/eval-crack/ \\\n        [--limit 50]" in evaluate  # no joined line
    serve = _help("serve")
    assert "`" not in serve
    train = " ".join(_help("train").split())
    assert "--lr LR AdamW learning rate (default: 0.0001)" in train
    assert ("--crop-size CROP_SIZE training crop side in px (default: the --resume "
            "weights', else 320)") in train
    propose = " ".join(_help("propose").split())
    assert "$DEFECTCAM_CONFIDENCE_THRESHOLD, else 0.5" in propose
    assert "(default: 8 on CUDA, 2 on CPU)" in propose  # --tile-batch


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"defectcam {__version__}"


@pytest.mark.parametrize(("args", "message"), [
    (["--iterations", "-1"], "--iterations must be between 0 and 32, got -1"),
    (["--iterations", "5"], "--iterations must be between 0 and 2 (limit set by "
                            "DEFECTCAM_MAX_ITERATIONS), got 5"),
    (["--min-confidence", "2"], "--min-confidence must be in [0, 1], got 2.0"),
    (["--cam-threshold", "1"], "--cam-threshold must be in (0, 1), got 1.0"),
    (["--labels", "crack,dust"], "unknown label(s) ['dust'] in --labels; this function knows "
                                   "['crack', 'spalling', 'rust']"),
    (["--tile-batch", "0"], "--tile-batch must be >= 1, got 0"),
    (["--max-pixels", "0"], "--max-pixels must be >= 1, got 0"),
])
def test_propose_refuses_bad_options_before_loading(tmp_path, capsys, monkeypatch, args,
                                                    message) -> None:
    """The weights do not exist: only a check made before loading can report the option."""
    if "5" in args:
        monkeypatch.setenv("DEFECTCAM_MAX_ITERATIONS", "2")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not looked at")
    code = main(["propose", str(photo), "--out", str(tmp_path / "out"),
                 "--weights", str(tmp_path / "no-weights"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err == f"defectcam propose: error: {message}\n"


def test_evaluate_refuses_bad_options_before_loading(tmp_path, capsys) -> None:
    code = main(["evaluate", "--weights", str(tmp_path / "none"), "--iterations", "99",
                 "--out", str(tmp_path)])
    assert code == 2
    assert "--iterations must be between 0 and 32, got 99" in capsys.readouterr().err


def test_propose_says_what_it_filtered_and_speaks_of_files(tmp_path, capsys, untrained_weights,
                                                          crack_photo) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("a text file renamed .jpg")
    code = main(["propose", str(crack_photo), str(notes), "--out", str(tmp_path / "out"),
                 "--weights", str(untrained_weights), "--device", "cpu", "--no-progress",
                 "--log", "off", "--cam-threshold", "0.3"])
    out, err = capsys.readouterr()
    assert code == 1  # one photo could not be read
    assert f"{notes}: skipped: {notes} is not a readable image file (24 bytes; expected a " \
           "JPEG or PNG file)" in err
    assert "base64" not in err
    line = next(x for x in out.splitlines() if x.startswith("crack_photo.png"))
    kept, left_out = re.search(r"(\d+) proposals .* \((\d+) below --min-confidence 0.5 left "
                               r"out\)", line).groups()
    assert int(kept) > 0 and int(left_out) > 0  # the rust classifier's (confidence ~0.29)
    assert (tmp_path / "out" / "crack_photo.cvat.json").is_file()


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_answers_without_loading_torch(command: str | None) -> None:
    """``defectcam --help`` builds every command's parser, ``defectcam CMD --help`` one: none
    may import torch (seconds of start-up for a help text)."""
    args = ["--help"] if command is None else [command, "--help"]
    script = ("import sys\nfrom defectcam.cli import main\n"
              f"try:\n    main({args!r})\nexcept SystemExit as exit:\n    code = exit.code\n"
              "print('torch loaded:', 'torch' in sys.modules, 'exit:', code, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert "usage: defectcam" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "torch loaded: False exit: 0"


def test_propose_takes_folders(tmp_path, capsys, untrained_weights, crack_photo) -> None:
    """A folder stands for the image files inside it (by suffix, in name order); other files
    in it are not photos and are passed over, not reported as unreadable."""
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(crack_photo, folder / "b.png")
    shutil.copy(crack_photo, folder / "a.PNG")
    (folder / "SOURCES.md").write_text("where the photos come from")
    (folder / "nested").mkdir()
    shutil.copy(crack_photo, folder / "nested" / "c.png")
    code = main(["propose", str(folder), "--out", str(tmp_path / "out"),
                 "--weights", str(untrained_weights), "--device", "cpu", "--no-progress",
                 "--log", "off", "--labels", "crack"])
    out, err = capsys.readouterr()
    assert code == 0, err
    done = [line.split(":")[0] for line in out.splitlines() if " proposals " in line]
    assert done == ["a.PNG", "b.png"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.cvat.json")) == [
        "a.cvat.json", "b.cvat.json"]


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_propose_names_a_missing_or_empty_folder(tmp_path, capsys, kind: str) -> None:
    folder = tmp_path / "photos"
    if kind == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no photo")
    code = main(["propose", str(folder), "--out", str(tmp_path / "out"),
                 "--weights", str(tmp_path / "no-weights")])
    err = capsys.readouterr().err
    assert code == 2
    expected = (f"no such image file or folder: {folder}" if kind == "missing"
                else f"{folder} holds no image file (.jpg, ")
    assert err.startswith(f"defectcam propose: error: {expected}"), err
    assert len(err.splitlines()) == 1


def test_propose_help_names_where_the_weights_defaults_come_from() -> None:
    """No hand-copied default: the weights' own values are named by where they live."""
    propose = " ".join(_help("propose").split())
    assert "else the weights' value: 'iterations' in weights/<defect>.json" in propose
    assert "else the weights' value: 'cam_threshold' in weights/<defect>.json" in propose
    assert "or folders (every image file inside" in propose
