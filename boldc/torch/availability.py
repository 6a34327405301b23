"""The torch engine needs PyTorch, an optional dependency: ``pip install 'boldc[torch]'``.

``require()`` imports torch or raises a one-line BoldcError saying how to install it;
nothing else in boldc imports torch, so ``import boldc`` works without it.
"""

from __future__ import annotations

from boldc.errors import BoldcError

TESTED_VERSION = "2.13.0"  # the pin of the extra boldc[torch] (pyproject.toml)
INSTALL_HINT = "pip install 'boldc[torch]'"


def require():
    """The torch module; a BoldcError if PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        raise BoldcError(f"the torch engine needs PyTorch, which is not installed: {INSTALL_HINT} "
                         f"(torch=={TESTED_VERSION}, the tested version)") from None
    return torch
