"""The torch engine's op implementations (``boldc.torch.registry`` says how they are
declared): ``forward`` holds the ops of @forward, ``grads`` the gradient and loss ops the
backward rules emit, ``norm`` batch normalization, ``optim`` the optimizer ops, ``resize``
resizing and its gradient, ``attention`` and ``transformer_float`` the ops of transformers.
Importing the package registers them all."""

from boldc.torch.ops import attention, forward, grads, norm, optim, resize, transformer_float  # noqa: F401  (registration)
