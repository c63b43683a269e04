"""Shared pytest configuration: fixtures live in tests/fixtures/ and are registered here."""

pytest_plugins = ["tests.fixtures.questdb", "tests.fixtures.services", "tests.fixtures.postgres",
                  "tests.fixtures.billing", "tests.fixtures.s3"]
