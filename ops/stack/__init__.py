"""Stack management: the embedded servers and the worker processes.

* :mod:`ops.stack.lifecycle` — ``up`` / ``down`` / ``status`` of the embedded stack.
* :mod:`ops.stack.servers` — how each server (broker, PostgreSQL, Redis) is started.
* :mod:`ops.stack.probes` — protocol-level health checks.
* :mod:`ops.stack.processes` — spawning, stopping and waiting for processes.
* :mod:`ops.stack.workers` — starting and stopping Faust worker processes.
* :mod:`ops.stack.worker_app` — the deployed worker (``faust -A ops.stack.worker_app``).
"""
