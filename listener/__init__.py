"""The network edge: a pynetdicom SCP that validates incoming mammograms, writes them
durably to the spool and records a job in the durable queue. It never runs a model.

Settings come in as plain arguments (ListenerSettings); nothing here imports the
composition root, explain/ or dicom_out/.
"""
from . import statuses
from .checks import Refusal, check_mammogram
from .intake import Intake
from .jobqueue import STATES, Job, JobQueue
from .scp import ListenerSettings, make_ae, start, tls_context
from .spool import Spool, write_durably
from .syntaxes import MAMMOGRAPHY_SOP_CLASSES, decodable_transfer_syntaxes, supported_contexts

__all__ = [
    "Intake", "Job", "JobQueue", "ListenerSettings", "MAMMOGRAPHY_SOP_CLASSES", "Refusal", "STATES", "Spool",
    "check_mammogram", "decodable_transfer_syntaxes", "make_ae", "start", "statuses", "supported_contexts",
    "tls_context", "write_durably",
]
