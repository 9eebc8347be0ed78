pytest_plugins = ["hubkit.testing.pg_fixtures"]
