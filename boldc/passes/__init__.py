"""IR passes, one per file, run by ``PassManager`` from a textual pipeline.

Importing this package registers every pass of this layer; passes that belong to a layer
above (``annotate-energy``, in boldc.energymodel) register when that package is imported,
which ``import boldc`` does."""

from boldc.passes import (  # noqa: F401  (registration)
    autodiff,
    bind_dims,
    dce,
    fold_bn,
    fuse_epilogues,
    insert_optimizer,
    lower_boolean,
    rematerialize,
    schedule_updates,
)
from boldc.passes.manager import (
    PASSES,
    LacksFunction,
    NeedsFunction,
    Option,
    Pass,
    PassManager,
    PassResult,
    parse_pipeline,
    register_pass,
)

__all__ = ["PASSES", "LacksFunction", "NeedsFunction", "Option", "Pass", "PassManager", "PassResult", "parse_pipeline",
           "register_pass"]
