"""The store's Alembic migrations: env.py and one module per revision under versions/ (applied by assistant.schema)."""
