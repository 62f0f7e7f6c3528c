"""The domain: ConfigMgr's rules and the documents that cross process boundaries. Pure.

packages.py        package classes, PackageID and site-code rules, a package's properties
refresh_answer.py  what RefreshPkgSource's answer means (the medium of STORAGE_COMPRESS)
distribution.py    content on DPs: status queries out, provider rows in, checked and bounded
criteria.py        a bulk's criteria, and the WQL they select with (wql.py builds it)
request.py         the refresh request contract: a task's kwargs, validated; its retry state
task_names.py      the task names producers send
outcomes.py        the outcome document (schema name and version included)
ids.py             what can name a request, a bulk or a key part
deadline.py        the time an attempt may still take, shared by every provider call in it
"""

from worker.domain.criteria import BulkCriteria, parse_criteria
from worker.domain.ids import child_request_id, is_bulk_id, is_key_part, is_request_id_key_part
from worker.domain.outcomes import (
    OUTCOME_SCHEMA_NAME,
    OUTCOME_SCHEMA_VERSION,
    AttemptInfo,
    InvalidOutcomeError,
    Outcome,
    RequestInfo,
)
from worker.domain.packages import (
    PACKAGE_CLASSES,
    STORAGE_COMPRESS,
    TASK_SEQUENCE_CLASS,
    PackageInfo,
    validate_package_class,
    validate_package_id,
    validate_site_code,
)
from worker.domain.refresh_answer import error_for_medium_fault, refresh_outcome
from worker.domain.request import RefreshRequest, RetryState, is_valid_id, parse_request
from worker.domain.task_names import BULK_PUMP_TASK, BULK_TASK, REFRESH_TASK

__all__ = [
    "BULK_PUMP_TASK",
    "BULK_TASK",
    "OUTCOME_SCHEMA_NAME",
    "OUTCOME_SCHEMA_VERSION",
    "PACKAGE_CLASSES",
    "REFRESH_TASK",
    "STORAGE_COMPRESS",
    "TASK_SEQUENCE_CLASS",
    "AttemptInfo",
    "BulkCriteria",
    "InvalidOutcomeError",
    "Outcome",
    "PackageInfo",
    "RefreshRequest",
    "RequestInfo",
    "RetryState",
    "child_request_id",
    "error_for_medium_fault",
    "is_bulk_id",
    "is_key_part",
    "is_request_id_key_part",
    "is_valid_id",
    "parse_criteria",
    "parse_request",
    "refresh_outcome",
    "validate_package_class",
    "validate_package_id",
    "validate_site_code",
]
