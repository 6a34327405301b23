"""The C backend's emitters, one per op (``registry`` says how they are declared):
``forward`` holds the ops of inference, ``training`` the gradients, losses and
optimizer updates, ``fused`` the fused op (a layer and its epilogues), ``attention`` and
``transformer_float`` the ops of transformers (and their gradients). Importing the package
registers them all."""

from boldc.backend.emitters import attention, forward, fused, training, transformer_float  # noqa: F401  (registration)
from boldc.backend.emitters.registry import EMITTERS, NOT_EMITTED, MustLower, NoEmitter, emits, emitter, not_emitted

__all__ = ["EMITTERS", "NOT_EMITTED", "MustLower", "NoEmitter", "emits", "emitter", "not_emitted"]
