"""One module per ``boldc`` sub-command; see ``boldc/cli.py``."""
