"""Real data shipped with selflearn (see each folder's README for its source).

The CSVs are stored gzip-compressed; loaders accept ``.csv`` and ``.csv.gz``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent


def data_path(relative: str) -> Path:
    """Return the path of a shipped data file or folder, e.g. ``data_path("video/Megamind.avi")``.

    >>> data_path("storypoints").is_dir()
    True
    """
    path = PACKAGE_DATA / relative
    if not path.exists():
        raise FileNotFoundError(f"selflearn data {relative!r} is not in {PACKAGE_DATA}")
    return path
