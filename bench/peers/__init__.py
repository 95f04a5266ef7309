"""Peers measured beside Cronraft, same machine, same run (`make bench-peers`; bench/README.md): Celery 5
with Redis (`celery_app`: the app, the task body, the fixed-rate beat schedule; `celery_stack`: Redis, a
prefork worker and beat as processes, and W1/W3 replayed on them; `compare`: the rounds and the table)."""
