"""DICOMweb (PS3.18) conformance suite runnable against any server.

Importing the package registers every check module in :data:`REGISTRY`.
"""

# Registration order is execution order: cleanup must stay last.
from . import stow, qido, wado, rendered, cors, capabilities, cleanup  # noqa: F401, I001
from .registry import REGISTRY, Check, CheckResult, Outcome, check

__all__ = ["REGISTRY", "Check", "CheckResult", "Outcome", "check"]
