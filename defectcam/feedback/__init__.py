"""The loop around the annotator (method.md section 7): log proposals, read CVAT's verdict,
turn it into new clicks."""

from defectcam.serving.interaction_log import (
    LoggedProposal,
    LoggedRequest,
    ProposalLog,
    log_proposals,
    model_version_of,
    read_log,
)

__all__ = [
    "LoggedProposal",
    "LoggedRequest",
    "ProposalLog",
    "log_proposals",
    "model_version_of",
    "read_log",
]
