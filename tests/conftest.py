import os

# Headless rendering for every test process (workers inherit it); must precede `import mujoco`.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
