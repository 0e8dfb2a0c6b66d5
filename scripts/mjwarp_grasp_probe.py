"""Does MuJoCo Warp follow native MuJoCo through a Lift grasp? The companion of
``scripts/mjx_grasp_probe.py`` for MuJoCo Warp (``mujoco_warp``), which also runs on a CPU through
Warp's CPU device, in float32 (its only precision).

A scripted Lift expert (``--expert-noise``, seeded by the init state) acts on the native state; its
actions are replayed open loop with Warp doing the physics. The arm controller stays native
(``sim_envs.arm.ArmController`` on the Warp state copied back each control step), so only the physics
differs: contacts, constraint solver, integrator. Needs the ``mjwarp`` extra
(``pip install -e '.[mjwarp]'``; warp-lang 1.16 and later fail to compile mujoco-warp 3.9's sensors).

    python scripts/mjwarp_grasp_probe.py [--init-ids 0,1,3] [--expert-noise 0.3] [--table box|plane]

Prints one JSON line per init state: native and Warp block height at the end, the max block / EE
deviation over the episode and the block deviation every 10 control steps (docs/mjx.md, session 33).
"""

from __future__ import annotations

import argparse
import json
import time

import mujoco
import numpy as np

from sim_envs.arm import ArmController
from sim_envs.init_states import get_layout
from sim_envs.mjx_backend import SUBSTEPS, TabletopEnv, copy_native_state, native_trajectory, table_as_plane


def require_mujoco_warp():
    """(warp, mujoco_warp), or an ImportError that names the extra."""
    try:
        import mujoco_warp
        import warp
    except ImportError as error:
        raise ImportError("MuJoCo Warp is not installed: pip install -e '.[mjwarp]'") from error
    warp.config.quiet = True
    return warp, mujoco_warp


def warp_replay(init_id: int, actions: np.ndarray, table: str, device: str) -> tuple[np.ndarray, np.ndarray]:
    """EE [T, 3] and block0 [T, 3] positions after each control step of ``actions`` [T, 7] from Lift
    init state ``init_id``, with MuJoCo Warp stepping the physics."""
    wp, mjw = require_mujoco_warp()
    native = TabletopEnv("Lift")
    native._apply(get_layout("Lift", init_id, "train"))  # the native reset: layout, home IK, settle
    scene_xml = table_as_plane(native.scene_xml) if table == "plane" else native.scene_xml
    model = mujoco.MjModel.from_xml_string(scene_xml)
    data = mujoco.MjData(model)
    copy_native_state(native.model, native.data, model, data)
    # The controller reads and writes ``data``, the host copy of the Warp state. Like the native env (and the
    # MJX backend) it reads the site pose a step leaves, the kinematics of its last substep's start.
    controller = ArmController(model, data)
    ee, block = np.zeros((len(actions), 3)), np.zeros((len(actions), 3))
    with wp.ScopedDevice(device):
        warp_model = mjw.put_model(model)
        warp_data = mjw.put_data(model, data, nconmax=200, njmax=800)
        for t, action in enumerate(actions):
            controller.set_action(np.clip(action, -1.0, 1.0))
            wp.copy(warp_data.ctrl, wp.array(data.ctrl[None].astype(np.float32)))
            for _ in range(SUBSTEPS):
                mjw.step(warp_model, warp_data)
            mjw.get_data_into(data, model, warp_data)
            ee[t], block[t] = data.site_xpos[controller.site_id], data.body("block0").xpos
    return ee, block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-ids", default="0,1,3", help="comma-separated Lift init states (train split)")
    parser.add_argument("--expert-noise", type=float, default=0.3, help="0: clean grasps; 0.3: the MJX test's")
    parser.add_argument("--table", choices=("plane", "box"), default="plane",
                        help="the table as a plane through its top face (MJX's default) or the scene's box")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="a Warp device: cpu, cuda:0")
    args = parser.parse_args()
    require_mujoco_warp()
    for init_id in (int(i) for i in args.init_ids.split(",")):
        native = native_trajectory("Lift", init_id, args.steps, ("block0",), expert_seed=init_id,
                                   expert_noise=args.expert_noise)
        started = time.perf_counter()
        ee, block = warp_replay(init_id, native.actions, args.table, args.device)
        block_gap = np.linalg.norm(block - native.bodies[:, 0], axis=-1)
        ee_gap = np.linalg.norm(ee - native.ee, axis=-1)
        print(json.dumps({
            "init_id": init_id, "expert_noise": args.expert_noise, "table": args.table, "device": args.device,
            "native_first_touch": native.first_touch,
            "native_block_height_end": round(float(native.bodies[-1, 0, 2]), 4),
            "warp_block_height_end": round(float(block[-1, 2]), 4),
            "max_block_deviation_m": round(float(block_gap.max()), 4),
            "max_ee_deviation_m": round(float(ee_gap.max()), 4),
            "block_deviation_m_every_10_steps": [round(float(x), 4) for x in block_gap[::10]],
            "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
