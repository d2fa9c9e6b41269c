"""One module per ``ccmon`` command: ``add_arguments(parser)`` and ``run(args) -> int``."""
