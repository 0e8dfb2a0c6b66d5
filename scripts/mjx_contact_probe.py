"""Which contacts does MJX's collision detection find where native MuJoCo finds which?

The MJX grasp of tests/sim_envs/test_mjx.py goes wrong at the first touch of a finger pad on the
block (docs/mjx.md). This script takes MJX's dynamics out of the question: it steps the *native*
simulation of that env (Lift, init state 2, the noisy scripted expert) and, every few substeps while
a finger pad touches something, runs MJX's ``forward`` on exactly the native state and prints both
contact lists (geom pair, penetration in mm; negative is penetrating). Any difference is in the
collision code alone.

    python scripts/mjx_contact_probe.py [--control-steps 10] [--every 5]

MJX's compile of ``forward`` takes 1-3 minutes on an idle CPU core (9 minutes beside other work).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mujoco  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="Lift")
    parser.add_argument("--init-id", type=int, default=2)
    parser.add_argument("--control-steps", type=int, default=10)
    parser.add_argument("--every", type=int, default=5, help="compare every this many substeps while a pad touches")
    args = parser.parse_args()

    import jax

    from sim_envs.experts import make_expert
    from sim_envs.init_states import get_layout
    from sim_envs.mjx_backend import require_mjx
    from sim_envs.tabletop_env import SUBSTEPS, TabletopEnv

    _, _, mjx = require_mjx()
    env = TabletopEnv(args.task)
    model, data = env.model, env.data
    env._apply(get_layout(args.task, args.init_id, "train"))
    expert = make_expert(env, noise_std=0.3, seed=args.init_id)  # the actions of the test's contact env
    device_model = mjx.put_model(model)
    forward = jax.jit(mjx.forward)

    def name(geom) -> str:
        return model.geom(int(geom)).name or f"geom{int(geom)}"

    def mjx_contacts() -> list[tuple[str, str, float]]:
        result = forward(device_model, mjx.put_data(model, data))
        contact = result._impl.contact if hasattr(result, "_impl") else result.contact
        dist, geoms = np.asarray(contact.dist), np.asarray(contact.geom)
        return [(name(a), name(b), round(float(d) * 1000, 3)) for (a, b), d in zip(geoms, dist) if d < 1e-6]

    started = time.perf_counter()
    for step in range(args.control_steps):
        env.arm.set_action(np.clip(expert.act(), -1, 1))
        for substep in range(SUBSTEPS):
            mujoco.mj_step(model, data)
            native = [(name(c.geom1), name(c.geom2), round(float(c.dist) * 1000, 3)) for c in data.contact[:data.ncon]]
            if substep % args.every or not any("pad" in a + b for a, b, _ in native):
                continue
            print(f"control step {step}, substep {substep}\n  native {native}\n  mjx    {mjx_contacts()}", flush=True)
    print(f"{time.perf_counter() - started:.0f} s (MuJoCo {mujoco.__version__})")


if __name__ == "__main__":
    main()
