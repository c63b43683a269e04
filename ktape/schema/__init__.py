"""QuestDB schema: numbered, idempotent migrations shared by ingestd and queryd.

Lives in `ktape/` because both services depend on the same table layout and services
never import each other.
"""

from ktape.schema.migrate import MIGRATIONS, Migration, applied_versions, apply_migrations

__all__ = ["MIGRATIONS", "Migration", "applied_versions", "apply_migrations"]
