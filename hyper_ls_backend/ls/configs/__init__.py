"""The labeling configs shipped with the package, by name (``preference_5point``, ...).

Package data read with ``importlib.resources``, so ``hyper-ls connect`` finds them wherever
the package is installed; ``label_config/README.md`` says which to use when.
"""

from __future__ import annotations

from importlib.resources import files


def names() -> list[str]:
    """The shipped configs' names, sorted."""
    return sorted(
        entry.name.removesuffix(".xml")
        for entry in files(__name__).iterdir()
        if entry.name.endswith(".xml")
    )


def read(name: str) -> str:
    """The shipped config ``name`` (``preference_3way``; a trailing ``.xml`` is allowed)."""
    stem = name.removesuffix(".xml")
    if stem not in names():
        raise KeyError(f"no shipped label config {name!r} (shipped: {', '.join(names())})")
    return files(__name__).joinpath(f"{stem}.xml").read_text(encoding="utf-8")
