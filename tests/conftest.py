"""Shared fixtures: store backends, the SMTP sink and the Temporal case environment."""

pytest_plugins = ["tests.backends", "tests.smtp_sink", "tests.workflow_env", "tests.dev_stack"]
