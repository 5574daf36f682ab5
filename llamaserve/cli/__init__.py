"""The `llamaserve` command: printing for humans, the terminal chat client."""

from .main import main

__all__ = ["main"]
