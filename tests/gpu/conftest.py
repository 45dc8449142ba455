from tests.smoke.conftest import red_env, tiny_toy  # noqa: F401  (shared fixtures)
