"""The op registry and the op families. Importing this package registers every op.

See ``boldc.ops.registry`` for what an op definition declares.
"""

from boldc.ops import (  # noqa: F401  (registration)
    activation_ops,
    boolean_ops,
    cast_ops,
    elementwise_ops,
    float_grad_ops,
    float_ops,
    grad_ops,
    loss_ops,
    optim_ops,
    pool_ops,
    shape_ops,
)
from boldc.ops.registry import REGISTRY, OpDef, TypeCheck, all_ops, lookup, register, with_trait

__all__ = ["REGISTRY", "OpDef", "TypeCheck", "all_ops", "lookup", "register", "with_trait"]
