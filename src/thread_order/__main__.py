"""``python -m thread_order``: the same as ``tdrun``."""

from .cli.main import console_main

console_main()
