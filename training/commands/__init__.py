"""The command-line commands of `python -m training`, one module each, thin over the library.

Each module defines `add_arguments(parser)` and `run(args) -> int`; training/cli.py dispatches to them.
"""
