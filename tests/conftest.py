"""Shared fixtures: store backends, the SMTP sink, the Temporal case environment, the dev-server
stack and the browser tests' stack."""

pytest_plugins = ["tests.backends", "tests.smtp_sink", "tests.workflow_env", "tests.dev_stack",
                  "tests.browser"]
