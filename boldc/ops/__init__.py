"""The op registry and the op families. Importing this package registers every op.

See ``boldc.ops.registry`` for what an op definition declares.
"""

from boldc.ir import catalog
from boldc.ops import (  # noqa: F401  (registration)
    activation_ops,
    boolean_ops,
    cast_ops,
    depth_space_ops,
    elementwise_ops,
    embedding_ops,
    float_grad_ops,
    float_ops,
    fused_ops,
    grad_ops,
    layernorm_ops,
    loss_ops,
    lrn_ops,
    mask_ops,
    matmul_ops,
    norm_ops,
    optim_ops,
    pool_ops,
    reduce_ops,
    resize_ops,
    shape_ops,
    signal_ops,
)
from boldc.ops.registry import REGISTRY, OpDef, TypeCheck, all_ops, lookup, register, the_op_with, with_trait

catalog.install(lookup)

__all__ = ["REGISTRY", "OpDef", "TypeCheck", "all_ops", "lookup", "register", "the_op_with", "with_trait"]
