"""The HTTP trigger API (`sccm-refresh api`): FastAPI on uvicorn, validating and delegating.

Entry-point layer: it may import worker, tasks and config; nothing imports it. It never talks
to WinRM: refreshes go to the Celery queue through the producers, reads come from Redis.
"""
