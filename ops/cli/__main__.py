"""``python -m ops.cli``: the same as the ``selflearn`` script."""

from __future__ import annotations

from ops.cli import main

if __name__ == "__main__":
    main()
