"""The ``selflearn`` command line (typer).

* :mod:`ops.cli.root` builds the app and registers every command explicitly,
  in the order ``selflearn --help`` lists them.
* One module per command group — :mod:`~ops.cli.stack` (up, down, status,
  fleet), :mod:`~ops.cli.run` (worker, vision, demo), :mod:`~ops.cli.measure`
  (bench, evaluate), :mod:`~ops.cli.replay`, :mod:`~ops.cli.audit`,
  :mod:`~ops.cli.operate` (promote, rollback), :mod:`~ops.cli.report` — holds
  plain functions that parse options, call a use case (``ops.usecases``,
  ``ops.stack``, ``ops.report``, ``ops.demo``) and print. They never import
  the root app, so each imports alone and nothing is registered by side effect.
* :mod:`ops.cli.common` holds the shared options and output helpers.

This package imports nothing at load time (the root is built in :func:`main`),
so importing one command module does not build the whole CLI.
"""

from __future__ import annotations


def main() -> None:
    """Console-script entry point (``selflearn``): build the app and run it."""
    from ops.cli.root import app

    app()
