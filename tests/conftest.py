"""Test plugins: a real PostgreSQL per session with a migrated template, servers on ephemeral ports."""

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.server",
    "tests.fixtures.app",
    "tests.fixtures.nats",
    "tests.fixtures.replica",
    "tests.fixtures.tracing",
]
