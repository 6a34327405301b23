"""Emitters of the attention ops: matmul, embedding and its gradient, the mask ops
and where's signal; the kernels are in ``attention_kernels``. The same C serves inference and
training (the gradient of matmul is matmuls and transposes, of where ``where_grad``)."""

from __future__ import annotations

from boldc.backend import attention_kernels
from boldc.backend.emitters.registry import emits

emits("matmul")(attention_kernels.matmul)
emits("embedding")(attention_kernels.embedding)
emits("embedding_grad")(attention_kernels.embedding_grad)
emits("equal")(attention_kernels.equal)
emits("not")(attention_kernels.logical_not)
emits("where")(attention_kernels.where)
emits("where_grad")(attention_kernels.where_grad)
