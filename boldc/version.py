"""The version of boldc (one place; ``boldc.__version__`` and generated files read it)."""

__version__ = "0.1.0"
