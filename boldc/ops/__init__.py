"""The op registry and the op families. Importing this package registers every op.

See ``boldc.ops.registry`` for what an op definition declares.
"""

from boldc.ops import boolean_ops, cast_ops, float_ops  # noqa: F401  (registration)
from boldc.ops.registry import REGISTRY, OpDef, TypeCheck, all_ops, lookup, register, with_trait

__all__ = ["REGISTRY", "OpDef", "TypeCheck", "all_ops", "lookup", "register", "with_trait"]
