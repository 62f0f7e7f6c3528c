"""Celery reads this module lazily (see `worker.app.create_app`): settings from the environment."""

from config.settings import get_settings
from worker.app import celery_config

globals().update(celery_config(get_settings()))
