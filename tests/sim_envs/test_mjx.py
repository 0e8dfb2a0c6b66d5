"""The MJX backend (``sim_envs.mjx_backend``) against native MuJoCo on the same actions, on CPU.

One batch of 2 Lift envs (one jit compile; Reach and Stack share this scene) runs 100 control steps
(5,000 physics steps) open loop with the same actions in both simulators:
- env 0 (init state 0): smooth seeded free-space motions above the blocks (arm only);
- env 1 (init state 2): the actions a noisy scripted Lift expert (seeded) produced natively:
  descend, pinch the block, lift it - contacts between fingers, block and table.

Measured on this machine (float32 MJX with 8 solver iterations, against float64 native):
- free space, 100 steps (init state 0): EE 2.3e-6 m, resting blocks 2e-8 m; a first 4-env version
  measured up to 4.3e-4 m (init state 1) -> FREE_TOL 2 mm (~5x margin over the worst);
- approach of init state 2 (steps 0-6, before a finger first touches the block at native step 8):
  EE 7.8e-4 m, blocks 1e-8 m, same 2 mm tolerance. (Init state 3, left out to halve the runtime,
  already differed before its native first touch: EE 2.8 cm, block 9.8 mm over steps 0-8);
- grasp and lift: NOT reproduced. Native lifts the block to 15.8 cm; MJX leaves it at 2.2 cm (block
  0.20 m off, EE 0.11 m off, > 1 cm from step 10; the 4-env run launched a block 1.3e3 m away). That
  test is ``xfail(strict=True)`` with CONTACT_TOL 2 cm, so a fix shows up as an XPASS failure.
  Session 17 (scripts/mjx_grasp_probe.py, same env, current experts): native first touch at step 7 and
  lift to 23 cm; MJX throws the arm 2.7 cm up at the first touch and never moves the block, the same
  with pyramidal cones, softer pads or 50 solver iterations (docs/mjx.md).
The "could fail" check shows the same comparison exceeds the tolerance for a different action
sequence and for a shifted init state. Runtime on 2 CPU cores: 5 min (the compile takes 1-3 min,
then each control step of the batch about a second), hence ``slow``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
pytest.importorskip("jax")
pytest.importorskip("mujoco.mjx")

from sim_envs.mjx_backend import MjxTabletopPhysics, native_trajectory, require_mjx  # noqa: E402

pytestmark = pytest.mark.slow

TASK, STEPS = "Lift", 100
FREE_IDS, CONTACT_IDS = (0,), (2,)  # batch index 0: free space, 1: contact
BLOCKS = ("block0", "block1", "block2")
# Max over steps and envs of the position difference (m); see the module docstring.
FREE_TOL = 0.002
CONTACT_TOL = 0.02
FREE_STEPS_CHECK = 10  # the shifted-layout check compares only the start, before any grasp


def free_actions(seed: int) -> np.ndarray:
    """[STEPS, 7] smooth sinusoids with seeded phases: about +-9 cm around the start, above the blocks."""
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS)[:, None]
    phases, periods = rng.uniform(0, 2 * np.pi, 7), rng.uniform(30, 50, 7)
    actions = 0.3 * np.sin(2 * np.pi * t / periods + phases)
    actions[:, 3:6] *= 0.5
    actions[:, 6] = np.sign(actions[:, 6])
    return actions


def native_run(init_id: int, actions: np.ndarray | None = None, expert_seed: int | None = None):
    """(actions [STEPS, 7], ee [STEPS, 3], blocks [STEPS, 3, 3], first step a finger touches block0
    or STEPS) of the native env from ``init_id``; with ``expert_seed`` the actions come from a noisy
    Lift expert acting on the native state."""
    run = native_trajectory(TASK, init_id, STEPS, BLOCKS, actions=actions, expert_seed=expert_seed)
    return run.actions, run.ee, run.bodies, run.first_touch


@pytest.fixture(scope="module")
def runs():
    native = [native_run(i, actions=free_actions(i)) for i in FREE_IDS]
    native += [native_run(i, expert_seed=i) for i in CONTACT_IDS]
    actions = np.stack([run[0] for run in native], axis=1).astype(np.float32)  # [STEPS, 2, 7]
    physics = MjxTabletopPhysics(TASK, num_envs=len(native))
    physics.reset(list(FREE_IDS + CONTACT_IDS))
    ee, blocks = np.zeros((STEPS, len(native), 3)), np.zeros((STEPS, len(native), len(BLOCKS), 3))
    for t in range(STEPS):
        physics.step(actions[t])
        ee[t], blocks[t] = physics.ee_position(), physics.body_positions(BLOCKS)
    native_ee = np.stack([run[1] for run in native], axis=1)
    native_blocks = np.stack([run[2] for run in native], axis=1)
    return {"ee": ee, "blocks": blocks, "native_ee": native_ee, "native_blocks": native_blocks,
            "physics": physics, "actions": actions, "first_touch": [run[3] for run in native]}


def deviation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def test_free_space_agrees_with_native(runs):
    """Arm-only motion (blocks resting on the table) over all 100 steps."""
    free_ee = deviation(runs["ee"][:, 0], runs["native_ee"][:, 0]).max()
    free_blocks = deviation(runs["blocks"][:, 0], runs["native_blocks"][:, 0]).max()
    print(f"\nfree space, max deviation (m): ee {free_ee:.2e}, blocks {free_blocks:.2e}")
    assert free_ee < FREE_TOL and free_blocks < FREE_TOL


def test_approach_agrees_with_native(runs):
    """The contact env until one control step before a finger first touches the target block
    (native): the descent towards the block, gripper open. One step of margin because the fingers
    close in on the block during the step before the native contact list shows it."""
    t = runs["first_touch"][1] - 1
    assert t >= 5, f"the expert touches the block too early to test the approach: step {t + 1}"
    ee = deviation(runs["ee"][:t, 1], runs["native_ee"][:t, 1]).max()
    blocks = deviation(runs["blocks"][:t, 1], runs["native_blocks"][:t, 1]).max()
    print(f"\ncontact env, steps 0-{t - 1} (before the grasp), max deviation (m): ee {ee:.2e}, blocks {blocks:.2e}")
    assert ee < FREE_TOL and blocks < FREE_TOL


@pytest.mark.xfail(strict=True, reason="MJX 3.9 (float32, CPU) throws the arm off the block at the first touch "
                   "instead of pushing the block, whatever the cone, pad softness or solver budget: grasps do not "
                   "reproduce; see docs/mjx.md")
def test_grasp_agrees_with_native(runs):
    ee = deviation(runs["ee"][:, 1], runs["native_ee"][:, 1])
    blocks = deviation(runs["blocks"][:, 1], runs["native_blocks"][:, 1])
    over = np.argmax(blocks.max(axis=1) > 0.01) if (blocks > 0.01).any() else None
    print(f"\ngrasp envs, max deviation (m): ee {ee.max():.2e}, blocks {blocks.max():.2e}; blocks differ by "
          f"> 1 cm from step {over}; native first touch at step {runs['first_touch'][1]}; native block0 "
          f"height at the end {runs['native_blocks'][-1, 1, 0, 2]}, MJX {runs['blocks'][-1, 1, 0, 2]}")
    assert ee.max() < CONTACT_TOL and blocks.max() < CONTACT_TOL


def test_comparison_can_fail(runs):
    """The same check on a different action sequence or a shifted init state exceeds the tolerance."""
    _, other_ee, _, _ = native_run(FREE_IDS[0], actions=free_actions(FREE_IDS[0] + 1))  # other actions
    assert deviation(runs["ee"][:, 0], other_ee).max() > FREE_TOL
    _, shifted_ee, _, _ = native_run(FREE_IDS[0] + 10, actions=free_actions(FREE_IDS[0]))
    assert deviation(runs["ee"][:, 0], shifted_ee).max() > FREE_TOL
    _, _, shifted_blocks, _ = native_run(CONTACT_IDS[0] + 10, actions=runs["actions"][:, 1])
    assert deviation(runs["blocks"][:FREE_STEPS_CHECK, 1], shifted_blocks[:FREE_STEPS_CHECK]).max() > FREE_TOL


def test_success_predicate_runs_the_task_code(runs):
    physics = runs["physics"]
    lifted = physics.body_positions(["block0"])[:, 0, 2] > 0.1  # Lift: the target centre above 10 cm
    assert np.array_equal(physics.success(), lifted)


def test_missing_jax_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jax", None)  # makes `import jax` raise ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[jax\]'"):
        require_mjx()


def test_adjust_model_edits_only_the_mjx_copy_and_reset_copies_the_native_state():
    """``adjust_model`` changes the MJX copy's contact settings, not the native reference; the reset
    state goes through a scratch MjData of that copy and still equals the native reset's."""
    import mujoco

    def pyramidal(model):
        model.opt.cone, model.opt.impratio = mujoco.mjtCone.mjCONE_PYRAMIDAL, 1.0

    physics = MjxTabletopPhysics("Reach", num_envs=2, adjust_model=pyramidal)
    assert physics.solver_model.opt.impratio == 1.0 and physics.model.opt.impratio != 1.0
    assert physics.model.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
    physics.reset([3, 4])
    np.testing.assert_allclose(physics.qpos()[1], physics.native.data.qpos, atol=1e-6)  # the last reset: id 4
    assert not np.allclose(physics.qpos()[0], physics.qpos()[1])
