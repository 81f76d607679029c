"""Issue 16: no frame fails a CVAT job. Through the Nuclio handler: thin frames get an empty
answer; what is no image keeps its 4xx."""

from __future__ import annotations

import pytest
from PIL import Image

from defectcam.feedback import read_log
from tests.function_support import call_function, captured_log, encode_image, start_function


@pytest.fixture(scope="module")
def plain(untrained_weights, tmp_path_factory):
    """The function with its defaults."""
    log_db = tmp_path_factory.mktemp("plain") / "log.sqlite"
    return start_function(DEFECTCAM_WEIGHTS=str(untrained_weights), DEFECTCAM_DEVICE="cpu",
                          DEFECTCAM_LOG_DB=str(log_db), DEFECTCAM_MAX_PIXELS="")


def _log_db(function):
    main, platform = function
    return platform._get_handler_context(main.handler).user_data.model.settings.log_db


# --------------------------------------------------------------------------- 16.1


@pytest.mark.parametrize("size", [(1, 1), (1, 4000), (4000, 1), (7, 300)])
def test_thin_frames_get_an_empty_answer_and_one_warning(plain, size) -> None:
    frame = encode_image(Image.new("RGB", size, (120, 110, 100)))
    with captured_log(plain) as log:
        status, shapes = call_function(plain, {"image": frame})
    assert (status, shapes) == (200, [])
    lines = [line for line in log.getvalue().splitlines() if "[warn" in line]
    assert len(lines) == 1 and "smallest side" in lines[0], log.getvalue()
    assert f"'width': {size[0]}, 'height': {size[1]}" in lines[0]
    assert "rejected request" not in log.getvalue() and "Traceback" not in log.getvalue()
    record = read_log(_log_db(plain))[-1]  # answered, so in the interaction log too
    assert (record.width, record.height) == size and record.proposals == []


def test_what_is_no_image_keeps_its_4xx(plain) -> None:
    assert call_function(plain, {"image": "***"})[0] == 400
    not_an_image = {"image": "aGVsbG8sIG5vdCBhbiBpbWFnZQ=="}
    status, payload = call_function(plain, not_an_image)
    assert status == 400 and "not a readable image file" in payload["error"]
