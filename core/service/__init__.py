"""The HTTP service: one API for every vertical, on the core's batcher, registry and access.

- ``app.create_app``: one worker's FastAPI application (health, readiness, metrics, ``/v1`` routes);
- ``context.ServiceContext``: what a vertical's router gets (API-key scopes, audit, live models,
  batchers, limits);
- ``live.LiveModel``: a model that follows its registry alias and switches without a restart;
- ``server.serve``: ``trillium serve``, uvicorn with several worker processes.
"""
