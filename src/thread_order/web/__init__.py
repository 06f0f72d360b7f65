"""The local web UI: a Starlette app over the engine, with its JSON API and static page."""
