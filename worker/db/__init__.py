"""Database layer: declarative models, engines and sessions, migrations."""

from worker.db.base import Base
from worker.db.session import make_engine, make_session_factory, session_scope

__all__ = ["Base", "make_engine", "make_session_factory", "session_scope"]
