"""tests/test_history_cli.py: five quick tasks, then ``hold`` says HOLDING on the real stdout and never returns."""

import sys
import threading

from thread_order import mark


@mark()
def quick_0(state):
    print("quick 0 done")


@mark()
def quick_1(state):
    print("quick 1 done")


@mark()
def quick_2(state):
    print("quick 2 done")


@mark()
def quick_3(state):
    print("quick 3 done")


@mark()
def quick_4(state):
    print("quick 4 done")


@mark(after=["quick_0", "quick_1", "quick_2", "quick_3", "quick_4"])
def hold(state):
    sys.__stdout__.write("HOLDING\n")
    sys.__stdout__.flush()
    threading.Event().wait(600)  # the test SIGKILLs the process long before


@mark(after=["hold"], always=True)
def teardown(state):
    pass
