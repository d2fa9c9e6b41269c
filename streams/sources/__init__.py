"""Sources: turn what phone systems and help desks already produce into canonical events.

Each source module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and is listed in
:data:`streams.cli.source.SOURCES`. Shared output, progress and row-error reporting live in
:mod:`streams.sources.common`; the mapping dialect of the tabular sources (cdr, tickets), their
reader and their command in :mod:`streams.sources.mapping`. See docs/SOURCES.md.
"""
