"""The worker process's side of Celery: its settings and client, and its message consumer."""
