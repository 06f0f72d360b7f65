"""Executors: where a run's tasks execute when not on the scheduler's own threads (engine/executor.py).

Each lives in a folder of its own and is found through the ``thread_order.executors``
entry-point group, so the engine never imports one: ``Scheduler(executor="dask")``.
"""
