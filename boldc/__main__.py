from boldc.cli import entry

entry()
