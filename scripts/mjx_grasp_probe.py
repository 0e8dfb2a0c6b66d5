"""Does an MJX grasp follow native MuJoCo? One Lift env (the contact env of tests/sim_envs/test_mjx.py:
init state 2, a noisy scripted expert acting on the native state) replayed open loop in MJX, with
one change to the MJX copy of the model per run, to find why MJX grasps do not follow native ones
(docs/mjx.md). Each variant compiles anew (1-3 min on CPU), so run one per process:

    python scripts/mjx_grasp_probe.py --variant baseline|x64|pyramidal|soft_pads|pyramidal_soft_pads|budget|mesh_pads

(``mesh_pads``: the pads as convex meshes of the same boxes, so MJX's general convex collider handles
them instead of its box-box one; ``MjxTabletopPhysics(pad_meshes=True)``.)

Prints one JSON line: native and MJX block height at the end, the max block / EE deviation, from
which control step each differs by more than 1 cm (native first touch for reference), and both
every 5 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

VARIANTS = ("baseline", "x64", "pyramidal", "soft_pads", "pyramidal_soft_pads", "budget", "mesh_pads")


def adjust_for(variant: str):
    """The edit of the MJX model copy for ``variant`` (None: the scene as natively)."""
    import mujoco

    def pyramidal(model) -> None:
        # MJX's elliptic-cone Newton Hessian is clamped near the cone tip (mujoco_warp #1657, copied from
        # MJX's solver.py); the MJX-ready Panda of mujoco_menagerie uses pyramidal cones, impratio 1, condim 3.
        model.opt.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
        model.opt.impratio = 1.0
        model.geom_condim[:] = np.minimum(model.geom_condim, 3)

    def soft_pads(model) -> None:
        # the menagerie Panda's pads: impedance over 10 mm of penetration (ours: 1 mm), time constant 0.01
        pads = [i for i in range(model.ngeom) if "pad" in (model.geom(i).name or "")]
        if not pads:
            raise ValueError("no finger-pad geoms (a name containing 'pad') in the scene")
        model.geom_solimp[pads, :3] = [0.95, 0.99, 0.01]
        model.geom_solref[pads, 0] = 0.01

    def budget(model) -> None:
        model.opt.iterations, model.opt.ls_iterations = 50, 50

    return {"baseline": None, "x64": None, "mesh_pads": None, "pyramidal": pyramidal, "soft_pads": soft_pads,
            "pyramidal_soft_pads": lambda m: (pyramidal(m), soft_pads(m)), "budget": budget}[variant]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, default="baseline")
    parser.add_argument("--init-id", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    if args.variant == "x64":
        import jax

        jax.config.update("jax_enable_x64", True)
    from sim_envs.mjx_backend import MjxTabletopPhysics, native_trajectory

    bodies = ("block0",)
    native = native_trajectory("Lift", args.init_id, args.steps, bodies, expert_seed=args.init_id)
    started = time.perf_counter()
    physics = MjxTabletopPhysics("Lift", num_envs=1, adjust_model=adjust_for(args.variant),
                                 pad_meshes=args.variant == "mesh_pads")
    physics.reset([args.init_id])
    ee, blocks = np.zeros((args.steps, 3)), np.zeros((args.steps, 3))
    for t in range(args.steps):
        physics.step(native.actions[t:t + 1].astype(np.float32))
        ee[t], blocks[t] = physics.ee_position()[0], physics.body_positions(bodies)[0, 0]
    block_gap = np.linalg.norm(blocks - native.bodies[:, 0], axis=-1)
    ee_gap = np.linalg.norm(ee - native.ee, axis=-1)

    def apart_from(gap: np.ndarray) -> int | None:
        """The first control step more than 1 cm off, if any."""
        over = np.flatnonzero(gap > 0.01)
        return int(over[0]) if len(over) else None

    print(json.dumps({
        "variant": args.variant, "init_id": args.init_id, "native_first_touch": native.first_touch,
        "native_block_height_end": round(float(native.bodies[-1, 0, 2]), 4),
        "mjx_block_height_end": round(float(blocks[-1, 2]), 4),
        "max_block_deviation_m": round(float(block_gap.max()), 4), "max_ee_deviation_m": round(float(ee_gap.max()), 4),
        "block_apart_from_step": apart_from(block_gap), "ee_apart_from_step": apart_from(ee_gap),
        "ee_deviation_m_every_5_steps": [round(float(x), 4) for x in ee_gap[::5]],
        "block_height_every_5_steps": {"native": [round(float(x), 3) for x in native.bodies[::5, 0, 2]],
                                       "mjx": [round(float(x), 3) for x in blocks[::5, 2]]},
        "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
