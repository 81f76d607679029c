"""Which file an annotated image is: its path under one of several image roots, or its content.

A training round mixes exports whose image names are relative to different folders (the data
set's ``rust/corrosion/images/1.jpg``, a CVAT export's ``0.jpg``). A name is resolved to the
one root that holds exactly that relative path; never to a file that merely shares its base
name. Where the name is found under several roots with different bytes, or under none, the
image's content hash (written by ``defectcam feedback``) decides; without one that is an error
naming the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from defectcam.core.digest import file_sha256

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageNotFoundError(FileNotFoundError):
    """An annotated image that no root holds, or that several roots hold differently."""


@dataclass
class ImageRoots:
    """Folders that image names are relative to, searched together (see the module rules)."""

    roots: list[Path]
    _digests: dict[Path, str] = field(default_factory=dict, repr=False)
    _by_digest: dict[str, list[Path]] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, roots: str | Path | Sequence[str | Path] | ImageRoots) -> ImageRoots:
        """``roots`` as an :class:`ImageRoots` (one folder or several)."""
        if isinstance(roots, ImageRoots):
            return roots
        if isinstance(roots, (str, Path)):
            roots = [roots]
        paths = [Path(r) for r in roots]
        missing = [str(p) for p in paths if not p.is_dir()]
        if missing:
            raise ImageNotFoundError(f"--images: no such folder: {', '.join(missing)}")
        return cls(paths)

    def digest(self, path: Path) -> str:
        """The file's sha256, computed once per path."""
        if path not in self._digests:
            self._digests[path] = file_sha256(path)
        return self._digests[path]

    def _content_index(self) -> dict[str, list[Path]]:
        if self._by_digest is None:
            self._by_digest = {}
            for root in self.roots:
                for path in sorted(root.rglob("*")):
                    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                        self._by_digest.setdefault(self.digest(path), []).append(path)
        return self._by_digest

    def candidates(self, name: str) -> list[Path]:
        """Every root's file at exactly the relative path ``name``."""
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ImageNotFoundError(f"image name {name!r} is not a relative path inside "
                                     "an image folder")
        return [root / name for root in self.roots if (root / name).is_file()]

    def find(self, name: str, sha256: str | None = None) -> Path | None:
        """The file of image ``name`` (see the module rules), or ``None`` when no root holds
        it; raises :class:`ImageNotFoundError` when the choice is ambiguous."""
        found = self.candidates(name)
        if sha256:
            same = [p for p in found if self.digest(p) == sha256]
            if same:
                return same[0]
            by_content = self._content_index().get(sha256, [])
            if by_content:
                return by_content[0]
            if found:
                raise ImageNotFoundError(
                    f"image {name!r}: {found[0]} has other content than the annotated image "
                    f"(sha256 {sha256[:12]}...); pass the --images folder that holds it")
            return None
        if len({self.digest(p) for p in found}) > 1:
            raise ImageNotFoundError(
                f"image {name!r} is ambiguous: {', '.join(str(p) for p in found)} differ; "
                "pass only the --images folder that belongs to this export")
        return found[0] if found else None

    def resolve(self, name: str, sha256: str | None = None) -> Path:
        """Like :meth:`find`, but an image no root holds is an error naming the roots."""
        path = self.find(name, sha256)
        if path is None:
            where = ", ".join(str(r) for r in self.roots) or "(no --images folder)"
            raise ImageNotFoundError(f"image {name!r} not found under {where} (names are "
                                     "relative to an --images folder; pass the folder that "
                                     "holds it)")
        return path
