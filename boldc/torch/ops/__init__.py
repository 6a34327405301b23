"""The torch engine's op implementations (``boldc.torch.registry`` says how they are
declared): ``forward`` holds the ops of @forward, ``grads`` the gradient and loss ops the
backward rules emit, ``norm`` batch normalization, ``optim`` the optimizer ops, ``resize``
resizing and its gradient. Importing the package registers them all."""

from boldc.torch.ops import forward, grads, norm, optim, resize  # noqa: F401  (registration)
