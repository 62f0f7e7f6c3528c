"""Celery reads this module lazily (see `worker.app.create_app`): settings from the environment.

Invalid settings stop the process with one line naming each bad field (exit code 78,
EX_CONFIG), not a traceback from inside Celery's loader.
"""

import sys

from config.settings import get_settings
from errors import ConfigError
from worker.app import celery_config

EXIT_CONFIG = 78

try:
    globals().update(celery_config(get_settings()))
except ConfigError as exc:
    print(f"sccm-refresh: error: {exc.message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG) from None
