"""Malti's terminal dashboard (``malti-tui``).

Run ``malti-tui --url URL --api-key KEY`` or embed :class:`MaltiApp`.
"""

from .config import Settings

__all__ = ["MaltiApp", "Settings", "main"]


def __getattr__(name: str):
    # Textual loads only when the app is wanted, so ``malti-tui --help`` stays quick.
    if name == "MaltiApp":
        from .app import MaltiApp

        return MaltiApp
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(name)
