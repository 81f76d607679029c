"""The loop around the annotator (method.md section 7): log proposals, read CVAT's verdict,
turn it into new clicks."""

from defectcam.feedback.log import (
    LOG_DB_ENV,
    LoggedProposal,
    LoggedRequest,
    ProposalLog,
    log_path_from_env,
    log_proposals,
    model_version_of,
    read_log,
)

__all__ = [
    "LOG_DB_ENV",
    "LoggedProposal",
    "LoggedRequest",
    "ProposalLog",
    "log_path_from_env",
    "log_proposals",
    "model_version_of",
    "read_log",
]
