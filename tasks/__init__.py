"""Celery tasks: validate the input, call the logic in `worker.jobs`, return JSON."""
