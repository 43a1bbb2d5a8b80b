"""Shared fixtures: the store backends (SQLite file, fresh PostgreSQL database) live in tests.backends."""

pytest_plugins = ["tests.backends"]
