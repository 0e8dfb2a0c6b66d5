"""Does an MJX grasp follow native MuJoCo? Lift envs (by default the noisy-grasp env of
tests/sim_envs/test_mjx.py: init state 3, a noisy scripted expert acting on the native state) replayed
open loop in MJX as one batch, with one change to the MJX copy of the model per run, to find why MJX
grasps do or do not follow native ones (docs/mjx.md). Each variant compiles anew (1-3 min on CPU), so
run one per process:

    python scripts/mjx_grasp_probe.py [--precision float64|float32] [--init-ids 0,1,2,3] [--expert-noise 0.3]
        [--variant baseline|pyramidal|soft_pads|pyramidal_soft_pads|budget|mesh_pads|table_box]

(``mesh_pads``: the pads as convex meshes of the same boxes, so MJX's general convex collider handles
them instead of its box-box one; ``MjxTabletopPhysics(pad_meshes=True)``. ``table_box``: the table as
the scene's box, as before session 31 (the default is a plane, ``table_plane=True``). ``--expert-noise 0``: clean
grasps, the fingers straddling the block; 0.3, the test's, often lands a pad on an edge first.)

Prints one JSON line per env: native and MJX block height at the end, the max block / EE deviation,
from which control step each differs by more than 1 cm (native first touch for reference), and both
every 5 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from sim_envs.mjx_backend import PRECISIONS  # noqa: E402

VARIANTS = ("baseline", "pyramidal", "soft_pads", "pyramidal_soft_pads", "budget", "mesh_pads", "table_box")


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

    return {"baseline": None, "mesh_pads": None, "table_box": None, "pyramidal": pyramidal, "soft_pads": soft_pads,
            "pyramidal_soft_pads": lambda m: (pyramidal(m), soft_pads(m)), "budget": budget}[variant]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, default="baseline")
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0])
    parser.add_argument("--init-ids", default="3", help="comma-separated Lift init states, one env each")
    parser.add_argument("--expert-noise", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    from sim_envs.mjx_backend import MjxTabletopPhysics, native_trajectory

    init_ids = [int(i) for i in args.init_ids.split(",")]
    bodies = ("block0",)
    natives = [native_trajectory("Lift", i, args.steps, bodies, expert_seed=i, expert_noise=args.expert_noise)
               for i in init_ids]
    started = time.perf_counter()
    physics = MjxTabletopPhysics("Lift", num_envs=len(init_ids), adjust_model=adjust_for(args.variant),
                                 pad_meshes=args.variant == "mesh_pads", table_plane=args.variant != "table_box",
                                 precision=args.precision)
    physics.reset(init_ids)
    ee, blocks = np.zeros((args.steps, len(init_ids), 3)), np.zeros((args.steps, len(init_ids), 3))
    for t in range(args.steps):
        physics.step(np.stack([native.actions[t] for native in natives]))
        ee[t], blocks[t] = physics.ee_position(), physics.body_positions(bodies)[:, 0]
    seconds = round(time.perf_counter() - started, 1)

    def apart_from(gap: np.ndarray) -> int | None:
        """The first control step more than 1 cm off, if any."""
        over = np.flatnonzero(gap > 0.01)
        return int(over[0]) if len(over) else None

    for k, (init_id, native) in enumerate(zip(init_ids, natives)):
        block_gap = np.linalg.norm(blocks[:, k] - native.bodies[:, 0], axis=-1)
        ee_gap = np.linalg.norm(ee[:, k] - native.ee, axis=-1)
        print(json.dumps({
            "variant": args.variant, "precision": args.precision, "expert_noise": args.expert_noise,
            "init_id": init_id, "native_first_touch": native.first_touch,
            "native_block_height_end": round(float(native.bodies[-1, 0, 2]), 4),
            "mjx_block_height_end": round(float(blocks[-1, k, 2]), 4),
            "max_block_deviation_m": round(float(block_gap.max()), 4),
            "max_ee_deviation_m": round(float(ee_gap.max()), 4),
            "block_apart_from_step": apart_from(block_gap), "ee_apart_from_step": apart_from(ee_gap),
            "ee_deviation_m_every_5_steps": [round(float(x), 4) for x in ee_gap[::5]],
            "block_height_every_5_steps": {"native": [round(float(x), 3) for x in native.bodies[::5, 0, 2]],
                                           "mjx": [round(float(x), 3) for x in blocks[::5, k, 2]]},
            "seconds_all_envs": seconds}), flush=True)


if __name__ == "__main__":
    main()
