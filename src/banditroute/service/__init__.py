"""The HTTP router service (extra ``[serve]``): decide, log, learn from delayed feedback, evaluate.

``config`` (TOML + pydantic), ``storage`` (SQLite WAL or PostgreSQL via SQLAlchemy), ``learner``
(single writer, checkpoints, replay), ``router`` (the core, no HTTP), ``app`` (FastAPI),
``auth`` (hashed API keys), ``metrics`` (Prometheus), ``components`` (embedders, retrievers) and
``static/dashboard.html``. Start one with ``banditroute serve --config router.toml``.
"""
