"""The model side of the Nuclio function: one proposal service per worker."""

import hashlib
import time

from defectcam.config import MAX_PIXELS_ENV, Settings
from defectcam.core.image_io import decode_base64, decode_image
from defectcam.faces.nuclio import read_request
from defectcam.serving.service import ProposalService


class ModelHandler:
    """Loads the weights once per Nuclio worker and answers request bodies.

    Not thread-safe by design: Nuclio gives each worker its own ``init_context`` and sends it
    one event at a time; ``defectcam serve`` does the same with one context per worker.
    """

    def __init__(self, settings: Settings, logger=None) -> None:
        self.settings = settings
        self.service = ProposalService.from_settings(settings, logger)
        self.labels = self.service.labels

    def infer(self, body) -> list[dict]:
        """CVAT shapes for one request body (``OptionError`` / ``ImageInputError`` for the
        client's mistakes, each naming the problem). A decodable frame of any size reaches
        the service, which answers one thinner than the model's smallest side with []."""
        started = time.perf_counter()  # DEFECTCAM_DEADLINE counts decoding too
        image, options = read_request(body, self.service.limits)
        data = decode_base64(image)
        decoded = decode_image(data, self.settings.max_pixels, limit_name=MAX_PIXELS_ENV,
                               min_side=1)
        answer = self.service.propose(decoded.rgb, options, face="nuclio", started=started,
                                      image_sha256=hashlib.sha256(data).hexdigest())
        return answer.shapes()
