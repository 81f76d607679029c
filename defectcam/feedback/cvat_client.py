"""Pull a task from a CVAT server with cvat-sdk: its "CVAT for images 1.1" export and images.

Server and credentials come from the environment (``CVAT_URL`` and ``CVAT_ACCESS_TOKEN``, or
``CVAT_USER`` + ``CVAT_PASSWORD``), never from arguments.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

CVAT_URL_ENV = "CVAT_URL"
CVAT_USER_ENV = "CVAT_USER"
CVAT_PASSWORD_ENV = "CVAT_PASSWORD"
CVAT_TOKEN_ENV = "CVAT_ACCESS_TOKEN"
EXPORT_FORMAT = "CVAT for images 1.1"


def cvat_connection(environ: dict | None = None) -> tuple[str, dict]:
    """(server URL, keyword arguments of ``cvat_sdk.make_client``) from the environment."""
    env = os.environ if environ is None else environ
    url = env.get(CVAT_URL_ENV, "").strip()
    if not url:
        raise ValueError(f"--task-id needs the CVAT server in ${CVAT_URL_ENV} "
                         "(e.g. http://localhost:8080)")
    token = env.get(CVAT_TOKEN_ENV, "").strip()
    if token:
        return url, {"access_token": token}
    user, password = env.get(CVAT_USER_ENV, ""), env.get(CVAT_PASSWORD_ENV, "")
    if not user or not password:
        raise ValueError(f"--task-id needs ${CVAT_TOKEN_ENV}, or ${CVAT_USER_ENV} and "
                         f"${CVAT_PASSWORD_ENV} (credentials are never taken from arguments)")
    return url, {"credentials": (user, password)}


def _safe_extract(archive: Path, dest: Path) -> None:
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if not (dest / member).resolve().is_relative_to(root):
                raise ValueError(f"{archive}: unsafe path {member!r} in the export")
        zf.extractall(dest)


def pull_task(task_id: int, dest: Path, environ: dict | None = None) -> tuple[Path, Path]:
    """Export task ``task_id`` as "CVAT for images 1.1" with images into ``dest``;
    returns (annotations.xml, images folder)."""
    url, auth = cvat_connection(environ)
    from cvat_sdk import make_client  # imported here: only this path needs the server
    from cvat_sdk.core.proxies.types import Location

    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"task-{task_id}.zip"
    with make_client(url, **auth) as client:
        task = client.tasks.retrieve(task_id)
        task.export_dataset(EXPORT_FORMAT, archive, include_images=True,
                            location=Location.LOCAL)
    _safe_extract(archive, dest)
    xml = next(iter(sorted(dest.rglob("annotations.xml"))), None)
    if xml is None:
        raise FileNotFoundError(f"{archive}: no annotations.xml in the export")
    images = xml.parent / "images"
    return xml, images if images.is_dir() else xml.parent
