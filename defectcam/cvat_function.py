"""``--function-module defectcam.cvat_function``, cvat-cli's public name for the cvat-sdk
function: the very module ``defectcam.faces.cvat_function`` under its old name."""

import sys

from defectcam.faces import cvat_function

sys.modules[__name__] = cvat_function
