"""One rank of the DistributedDataParallel training test (started by torch.distributed.run).

Trains on a tiny synthetic crop set with ``train_classifier`` exactly as ``defectcam train``
does under ``torchrun``, and records, for the test, the parameters each rank holds after
every epoch: ``predict_probabilities`` (the real function, called by the loop once per epoch
with the trained module) is wrapped to save them to ``<out>/rank<R>-epoch<E>.pt`` first.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT_DIR EPOCHS
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from defectcam.core.weights import WeightsMetadata  # noqa: E402
from defectcam.data.crops import ClickCropDataset, CropSet  # noqa: E402
from defectcam.training import loop  # noqa: E402
from tests.helpers import crack_crop_batch  # noqa: E402


def crop_set(n: int, seed: int) -> CropSet:
    crops, labels = crack_crop_batch(n, np.random.default_rng(seed))
    zeros = np.zeros((n, 2))
    return CropSet(crops, labels, zeros, zeros, [f"img{k}" for k in range(n)])


def main() -> int:
    out, epochs = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    real_predict = loop.predict_probabilities
    epoch = {"n": 0}

    def recording_predict(model, *args, **kwargs):
        epoch["n"] += 1
        params = {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
        torch.save(params, out / f"rank{rank}-epoch{epoch['n']}.pt")
        return real_predict(model, *args, **kwargs)

    loop.predict_probabilities = recording_predict
    train = ClickCropDataset(crop_set(64, 0), seed=0, layout="hwc")
    val = ClickCropDataset(crop_set(16, 1), augment=False, layout="hwc")
    config = loop.TrainConfig(epochs=epochs, batch_size=16, micro_batch=4, lr=1e-3, seed=0,
                              max_steps_per_epoch=3, progress=False)
    result = loop.train_classifier(train, val, WeightsMetadata(label="crack", tile_size=48),
                                   out / "weights" / "crack.safetensors", config)
    summary = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "device": result.device,
               "best_epoch": result.best_epoch, "steps": result.history[-1]["step"],
               "losses": [r["train_loss"] for r in result.history]}
    (out / f"rank{rank}.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
