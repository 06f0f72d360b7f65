"""``python -m thread_order.cli``: the same as ``tdrun``."""

from .main import console_main

console_main()
