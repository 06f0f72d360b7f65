"""Signals: SIGTERM handled like Ctrl-C while start() runs, and Ctrl-C at import time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

WAIT = 30.0


def test_ctrl_c_while_importing_the_package_is_a_keyboard_interrupt_not_a_name_error():
    # a real SIGINT, sent at the moment importlib.metadata's own code starts executing
    # inside ``import thread_order``: the one window where its except clause was unbound
    script = textwrap.dedent("""
        import os, signal, sys
        for name in [m for m in sys.modules if m.startswith("importlib.metadata")]:
            del sys.modules[name]
        sent = []

        def tracer(frame, event, arg):
            if (not sent and event == "call"
                    and frame.f_code.co_filename.replace(os.sep, "/").endswith(
                        "importlib/metadata/__init__.py")):
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)
            return None

        sys.settrace(tracer)
        try:
            import thread_order
        except KeyboardInterrupt:
            print("KeyboardInterrupt", bool(sent))
        except BaseException as exc:
            print(type(exc).__name__, bool(sent))
        else:
            print("imported", bool(sent))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT)
    assert done.stdout.split() == ["KeyboardInterrupt", "True"], done.stdout + done.stderr
