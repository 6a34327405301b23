"""IR passes, one per file, run by ``PassManager`` from a textual pipeline.

Importing this package registers every pass."""

from boldc.passes import (  # noqa: F401  (registration)
    annotate_energy,
    autodiff,
    dce,
    fold_bn,
    insert_optimizer,
    lower_boolean,
    rematerialize,
    schedule_updates,
)
from boldc.passes.manager import PASSES, Option, Pass, PassManager, parse_pipeline, register_pass

__all__ = ["PASSES", "Option", "Pass", "PassManager", "parse_pipeline", "register_pass"]
