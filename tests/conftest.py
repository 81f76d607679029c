"""Shared fixtures: the real data (../shared/data), a fitted fixture classifier, the fakes
and photos the face tests share, untrained weights, and a running ``defectcam serve``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from defectcam.config import shared_data_path

REPO = Path(__file__).resolve().parents[1]
# Faces log every answer (runs/defectcam-log.sqlite by default): tests that check the log set
# DEFECTCAM_LOG_DB themselves; the others must not write into the checkout.
os.environ.setdefault("DEFECTCAM_LOG_DB", "off")
SHARED_DATA = shared_data_path()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets; tests that need them skip (with the reason) when absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set DEFECTCAM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fitted_crack_model():
    """A classifier fitted for a few hundred steps on synthetic concrete with dark lines.

    Small 48 px crops keep it to well under a minute on 2 CPU cores; cracks are a few
    pixels wide, so 48 px crops hold a clear positive or negative.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from defectcam.core.model import build_classifier
    from defectcam.core.transforms import normalize_batch
    from tests.helpers import crack_crop_batch

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n = 384
    crops, labels = crack_crop_batch(n, rng)
    x_all = normalize_batch(crops)
    y_all = torch.from_numpy(labels)
    model = build_classifier(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    model.train()
    for _ in range(240):
        idx = torch.from_numpy(rng.choice(n, 16, replace=False))
        loss = F.binary_cross_entropy_with_logits(model(x_all[idx]).logit, y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = ((model(x_all).logit > 0).float() == y_all).float().mean().item()
    assert accuracy > 0.9, f"fixture classifier did not fit (accuracy {accuracy:.2f})"
    return model


# --------------------------------------------------------------------------- shared fakes


class FixedProposer:
    """Stands in for ``DefectProposer``: known proposals, one per label and confidence.

    A square with a hole (crack, 0.9), a thin line (spalling, 0.6), a blob on the image
    border (rust, 0.4) and a lone pixel in the last column (crack, 0.2) on an 80 x 60 frame.
    ``calls`` records every ``propose_detailed`` call's options.
    """

    labels = ("crack", "spalling", "rust")
    predictors: dict = {}
    width, height = 80, 60

    def __init__(self) -> None:
        import numpy as np

        from defectcam.core.postprocess import mask_to_proposals

        mask = np.zeros((self.height, self.width), bool)
        mask[5:25, 10:30] = True
        mask[12:16, 15:20] = False  # a hole: the polygon covers it, the mask does not
        mask[40:42, 30:75] = True  # a thin crack
        mask[50:60, 0:3] = True  # touches the image border (bottom-left)
        mask[50, 79] = True  # a lone pixel in the last column: its polygon is its square
        self.proposals = mask_to_proposals(mask, "crack", min_area=1)
        for p, label, confidence in zip(self.proposals, ("crack", "spalling", "rust", "crack"),
                                        (0.9, 0.6, 0.4, 0.2), strict=True):
            p.label, p.confidence = label, confidence
        self.calls: list[dict] = []

    def propose_detailed(self, image, iterations=None, cam_threshold=None, labels=None,
                         screen=False, min_confidence=0.0, progress=None):
        from defectcam.core.proposer import ProposalResult

        self.calls.append({"iterations": iterations, "cam_threshold": cam_threshold,
                           "labels": labels, "screen": screen, "image_shape": image.shape})
        kept = [p for p in self.proposals if p.confidence >= min_confidence
                and (labels is None or p.label in labels)]
        return ProposalResult(proposals=kept)


@pytest.fixture
def fixed_proposer() -> FixedProposer:
    return FixedProposer()


@pytest.fixture
def fixed_service(fixed_proposer):
    """A real ProposalService around the fixed proposer (no interaction log)."""
    from defectcam.config import Settings
    from defectcam.serving.service import ProposalService

    return ProposalService(fixed_proposer, Settings(log_db=None))


# --------------------------------------------------------------------------- photos, weights


@pytest.fixture(scope="session")
def crack_photo(tmp_path_factory) -> Path:
    """A 128 x 96 PNG of synthetic concrete with two drawn cracks (a real file, real bytes)."""
    import numpy as np
    from PIL import Image

    from tests.helpers import concrete_texture, draw_crack

    rng = np.random.default_rng(5)
    image = concrete_texture(96, 128, rng)
    draw_crack(image, rng, width=3)
    draw_crack(image, rng, width=2)
    path = tmp_path_factory.mktemp("photos") / "crack_photo.png"
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory) -> Path:
    """One seeded, untrained classifier per label; small tiles keep CPU tests fast."""
    from tests.function_support import write_untrained_weights

    return write_untrained_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def function_request_env() -> dict[str, str]:
    """The request limits function.yaml sets: every face of the contract runs with them."""
    import yaml

    from defectcam.config import REQUEST_ENV

    config = yaml.safe_load((REPO / "function.yaml").read_text())
    env = {item["name"]: str(item["value"]) for item in config["spec"]["env"]}
    return {name: value for name, value in env.items() if name in REQUEST_ENV}


# --------------------------------------------------------------------------- the HTTP face


class Server:
    """A ``defectcam serve`` subprocess: its address, stderr log, what it printed at start
    and its interaction log."""

    def __init__(self, host: str, port: int, log: Path, stdout: list[str], log_db: Path):
        self.host, self.port, self.log, self.stdout, self.log_db = host, port, log, stdout, log_db


#: Body limit of the test server (small, so the 413 test stays cheap).
SERVER_MAX_BODY = 3_000_000
#: The test server's own pixel limit, from the environment (the yaml's other limits apply).
SERVER_MAX_PIXELS = 4_000_000


@pytest.fixture(scope="session")
def http_server(tmp_path_factory, untrained_weights):
    """2-worker ``defectcam serve`` on a free loopback port, with function.yaml's settings
    except the pixel limit (set in its environment)."""
    import re
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("serve")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEFECTCAM_")}
    env.update(DEFECTCAM_WEIGHTS=str(untrained_weights), DEFECTCAM_DEVICE="cpu",
               DEFECTCAM_MAX_PIXELS=str(SERVER_MAX_PIXELS),
               DEFECTCAM_LOG_DB=str(tmp / "log.sqlite"),
               PYTHONPATH=str(REPO))
    log = tmp / "stderr.log"
    command = [sys.executable, "-m", "defectcam.commands.serve", "--host", "127.0.0.1",
               "--port", "0", "--workers", "2", "--function-dir", str(REPO),
               "--max-body-bytes", str(SERVER_MAX_BODY), "--worker-timeout", "120"]
    with open(log, "wb") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env,
                                   cwd=tmp, text=True)
    try:
        lines = []
        for line in process.stdout:  # the settings, then the address once every worker is up
            lines.append(line.rstrip("\n"))
            if "listening on" in line:
                break
        match = re.search(r"http://([\d.]+):(\d+)", lines[-1] if lines else "")
        if not match:
            process.kill()
            pytest.fail(f"server did not start: {lines!r}\n{log.read_text()}")
        yield Server(match.group(1), int(match.group(2)), log, lines, tmp / "log.sqlite")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
