"""Weights on disk: one ``<label>.safetensors`` per defect plus a ``<label>.json`` sidecar.

Nothing is ever unpickled: tensors come from safetensors, settings from JSON. The JSON carries
the SHA-256 of the tensor file so that a sidecar from another training run is caught.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from defectcam.core.digest import file_sha256
from defectcam.core.model import SERVED_MAPS, DefectClassifier, build_classifier
from defectcam.core.refine import Refinement
from defectcam.core.transforms import IMAGENET_MEAN, IMAGENET_STD

FORMAT_VERSION = 1
#: What a proposal's confidence can be (see ``WeightsMetadata.confidence``).
CONFIDENCE_KINDS = ("tile", "peak", "near-peak", "mean")
FORMAT_NAME = "defectcam-classifier"


class WeightsError(ValueError):
    """A weights file is missing, truncated, or does not match the model or its sidecar."""



def check_working_scale(scale: float, setting: str = "working scale") -> float:
    """A working scale is a factor in (0, 1]: the image is shrunk by it before tiling."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ValueError(f"{setting} must be a number in (0, 1], got {scale!r}")
    return float(scale)


def check_working_max_side(max_side: int, setting: str = "working max side") -> int:
    """A working longer side is a whole number of pixels; 0 means no limit."""
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 0:
        raise ValueError(f"{setting} must be a whole number of pixels >= 0 (0: no limit), "
                         f"got {max_side!r}")
    return max_side


@dataclass
class WeightsMetadata:
    """Everything needed to use a classifier the way it was validated.

    Defaults are the method's: CAM threshold 0.1 (paper), AdvCAM T=2 steps, xi=0.08 and
    tau=0.5 (official AdvCAM); ``lam`` weighs the salient-region regulariser, which here is a
    *mean* over pixels (official: lambda=7 on a stride-16 *sum*).
    """

    label: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    tile_size: int = 512
    tile_overlap: int = 128
    iterations: int = 2
    cam_threshold: float = 0.1
    xi: float = 0.08
    tau: float = 0.5
    lam: float = 7.0
    closing_size: int = 5
    min_area: int = 64
    #: Typical CAM peak on a true defect (calibrated after training, 0 = unknown). The map
    #: is divided by max(image peak, cam_scale * (T+1)), so a defect-free image is not
    #: stretched until its noise looks like a defect.
    cam_scale: float = 0.0
    #: The image is shrunk by this factor before tiling and the map enlarged back (speed:
    #: large blobs such as rust may run at 0.5, 4x fewer pixels; thin cracks stay at 1.0).
    #: Sidecars written before this field existed load with 1.0, the behaviour they had.
    #: The predictor never shrinks an image below one tile (``tile_size``) on its shorter side.
    working_scale: float = 1.0
    #: Frames whose longer side (after ``working_scale``) exceeds this many pixels are shrunk
    #: to it (0: no limit). Blobs such as rust: the classifier sees a 5K drone frame at the
    #: size it was trained at whatever the camera, and a 25 MP frame costs a 1 MP one.
    #: Sidecars written before this field existed load with 0, the behaviour they had.
    working_max_side: int = 0
    #: Tile screening for requests that do not say: tiles whose probability is below this
    #: keep their plain Grad-CAM instead of being climbed (0 = climb every tile, the
    #: behaviour of sidecars written before this field existed).
    screen_threshold: float = 0.0
    #: Fitting proposals to image evidence (``defectcam.core.refine.Refinement`` as a dict; empty:
    #: the map alone, the paper's post-processing).
    refinement: dict = field(default_factory=dict)
    #: What a proposal's confidence is: ``tile`` (the classifier's probability for the tile
    #: holding the proposal's peak) or ``peak`` (the proposal's own peak on the normalised
    #: map, so that CVAT's threshold removes weak proposals, not whole tiles) or ``near-peak``
    #: (the map's peak within the refinement's dilation of the proposal: a crack fitted beside
    #: the CAM's band is as sure as the band) or ``mean`` (the proposal's mean on the map: a
    #: pixel map's probability over the whole proposal).
    confidence: str = "tile"
    #: The map the classifier serves: ``cam`` (Grad-CAM of the click-trained head) or
    #: ``pixel`` (the pixel head's probability, trained on pseudo-masks and annotated masks;
    #: the tensors then hold ``pixel_head``). Sidecars written before this field: ``cam``.
    serves: str = "cam"
    #: The click interactor's settings for this classifier
    #: (``defectcam.core.interact.InteractSettings`` as a dict, chosen on training photos by
    #: ``scripts/interact_grid.py``; empty: its defaults, which fall back to the detector's
    #: threshold and refinement).
    interact: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    sha256: str = ""

    def to_json(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_json(cls, data: dict, source: Path) -> WeightsMetadata:
        if not isinstance(data, dict) or "label" not in data:
            raise WeightsError(f"{source}: metadata must be a JSON object with a 'label'")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(f"{source}: unknown metadata keys {unknown}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise WeightsError(
                f"{source}: format_version {version} is not supported (expected {FORMAT_VERSION})"
            )
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        try:
            check_working_scale(data.get("working_scale", 1.0), "working_scale")
            check_working_max_side(data.get("working_max_side", 0), "working_max_side")
        except ValueError as err:
            raise WeightsError(f"{source}: {err}") from None
        screen = data.get("screen_threshold", 0.0)
        if isinstance(screen, bool) or not isinstance(screen, (int, float)) or not (
                0 <= screen < 1):
            raise WeightsError(f"{source}: screen_threshold must be a number in [0, 1) "
                               f"(0: no screening), got {screen!r}")
        if data.get("serves", "cam") not in SERVED_MAPS:
            raise WeightsError(f"{source}: serves must be one of {SERVED_MAPS}, "
                               f"got {data['serves']!r}")
        if data.get("confidence", "tile") not in CONFIDENCE_KINDS:
            raise WeightsError(f"{source}: confidence must be one of {CONFIDENCE_KINDS}, "
                               f"got {data['confidence']!r}")
        try:
            Refinement.from_dict(data.get("refinement"))
        except (TypeError, ValueError) as err:
            raise WeightsError(f"{source}: bad refinement {data.get('refinement')!r}: {err}"
                               ) from None
        from defectcam.core.interact import InteractSettings  # it imports this module

        try:
            InteractSettings.from_dict(data.get("interact"))
        except (TypeError, ValueError) as err:
            raise WeightsError(f"{source}: bad interact {data.get('interact')!r}: {err}"
                               ) from None
        return cls(**data)


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_weights(model: DefectClassifier, metadata: WeightsMetadata, path: str | Path) -> Path:
    """Write ``path`` (.safetensors) and its JSON sidecar; returns the tensor file's path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: weights files end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": FORMAT_NAME, "label": metadata.label})
    metadata.sha256 = file_sha256(path)
    sidecar_path(path).write_text(json.dumps(metadata.to_json(), indent=2) + "\n")
    return path


def read_metadata(path: str | Path) -> WeightsMetadata:
    """The sidecar of a weights file, validated (without touching the tensors)."""
    side = sidecar_path(Path(path))
    if not side.is_file():
        raise WeightsError(f"{side}: metadata file is missing (expected next to {path})")
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{side}: not valid JSON ({exc})") from exc
    try:
        return WeightsMetadata.from_json(data, side)
    except TypeError as exc:
        raise WeightsError(f"{side}: bad metadata ({exc})") from exc


def load_weights(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[DefectClassifier, WeightsMetadata]:
    """Load a classifier in eval mode, never unpickling; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    metadata = read_metadata(path)
    if metadata.sha256 and metadata.sha256 != file_sha256(path):
        raise WeightsError(
            f"{path}: checksum differs from {sidecar_path(path).name} "
            "(truncated file, or the sidecar belongs to other weights)"
        )
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    model = build_classifier(pixel_head=metadata.serves == "pixel")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{path}: tensors do not match the defectcam classifier "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise WeightsError(
                f"{path}: tensor {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict(tensors)
    return model.to(device).eval(), metadata


#: Names of training checkpoints, which a weights folder may hold beside the weights.
CHECKPOINT_SUFFIXES = (".checkpoint.safetensors", ".finished-checkpoint.safetensors")


def find_weights(source: str | Path | list[str | Path]) -> dict[str, Path]:
    """Map label -> weights file, from a directory of ``*.safetensors`` or a list of files."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        # Training checkpoints (<label>.checkpoint.safetensors, and the annotation loop's
        # <label>.finished-checkpoint.safetensors) may sit beside the weights.
        paths = sorted(p for p in Path(source).glob("*.safetensors")
                       if not p.name.endswith(CHECKPOINT_SUFFIXES))
        if not paths:
            raise WeightsError(f"{source}: no *.safetensors weights in this directory")
    elif isinstance(source, (str, Path)):
        paths = [Path(source)]
    else:
        paths = [Path(p) for p in source]
    found: dict[str, Path] = {}
    for path in paths:
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found")
        label = read_metadata(path).label
        if label in found:
            raise WeightsError(f"{path}: label {label!r} already provided by {found[label]}")
        found[label] = path
    return found
