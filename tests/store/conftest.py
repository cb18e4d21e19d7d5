from server.conftest import clean_env  # noqa: F401  (autouse)
