"""The engine: graph, scheduler, dispatcher, event stream, state and capture (standard library only).

Every front-end observes a run through the engine's single event stream
(``events``); nothing here imports a front-end.
"""
