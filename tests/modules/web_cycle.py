"""Tasks whose dependencies form a cycle."""

from thread_order import dmark


@dmark(after=["second"])
def first():
    pass


@dmark(after=["first"])
def second():
    pass


@dmark()
def free():
    pass
