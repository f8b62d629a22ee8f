"""Use cases: what the operator commands do, callable without the CLI.

Each module takes settings and server addresses, does the work and returns
plain data (dicts, dataclasses); it never parses arguments or prints. The
command modules in :mod:`ops.cli` call these and print the result.

* :mod:`ops.usecases.audit` — recompute a decision from the archive and its model snapshot.
* :mod:`ops.usecases.operator_commands` — promote / rollback through ``operator.command``.
* :mod:`ops.usecases.fleet` — live policy per agent, dead letters, worker lag.
* :mod:`ops.usecases.replay` — read events back; rebuild the features and compare.
* :mod:`ops.usecases.evaluate` — prequential evaluation, offline or through the pipeline.
* :mod:`ops.usecases.vision` — run the vision agent with its metrics.
* :mod:`ops.usecases.faces` — how much of every face a DNN detector sees the agent blurs.
* :mod:`ops.usecases.lineage` — a decision's model, snapshot, registry run, training
  offsets and promotions; the decisions a model version served.
"""
