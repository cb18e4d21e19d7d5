from server.conftest import clean_env, fast_retries, judge, label_studio, llm  # noqa: F401
