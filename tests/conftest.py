import os

# Headless rendering for every test process (workers inherit it); must precede `import mujoco`.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

# Checksums verified by one test must not be taken from (or left in) the user's cache.
os.environ["VLA_RL_VERIFY_CACHE"] = "off"


def pytest_collection_modifyitems(config, items):
    """Run the MJX tests last: once jax has started its thread pool in this process, a later test
    that forks (env worker processes) could inherit a held lock; nothing forks after them."""
    items.sort(key=lambda item: "test_mjx.py" in item.nodeid)  # stable: the rest keep their order
