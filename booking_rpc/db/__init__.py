"""Database layer: embedded PostgreSQL, the asyncpg pool, migrations and named SQL statements."""
