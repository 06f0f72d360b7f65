"""A module that cannot be imported: the page must show the error."""

import thread_order_no_such_module  # noqa: F401
