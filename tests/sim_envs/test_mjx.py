"""The MJX backend (``sim_envs.mjx_backend``) against native MuJoCo on the same actions, on CPU.

One batch of 3 Lift envs (one jit compile; Reach and Stack share this scene), float64 with the
clamped-actuator correction and the table as a plane (the backend's defaults), runs 100 control
steps (5,000 physics steps) open loop with the same actions in both simulators:
- env 0 (init state 0): smooth seeded free-space motions above the blocks (arm only);
- env 1 (init state 3): the actions a noisy scripted Lift expert (noise 0.3, seeded) produced
  natively: descend, land a pad on the block, push it about; natively it ends 1.5 cm up, tipped;
- env 2 (init state 1): the clean scripted Lift expert's actions (no noise): the fingers straddle
  the block, pinch it and lift it to 25 cm.

Measured on this machine (session 31; scripts/mjx_grasp_probe.py, init states 0-3 each):
- free space: EE 2.3e-15 m, resting blocks 1.5e-11 m (float32: up to 4.3e-4 m) -> FREE_TOL 2 mm;
- approach (steps before a finger first touches the block): 1e-15 m with the correction, 1.45 mm
  without it (the noisy expert saturates the arm's servos) -> FREE_TOL;
- clean grasp and lift (--expert-noise 0): max block deviation 0.8 / 0.6 / 0.7 / 0.9 mm, EE <= 0.2 mm
  over 100 steps (without the correction up to 3.1 mm) -> GRASP_TOL 1 cm for blocks, EE FREE_TOL.
  In float32 the same grasps go wrong (blocks squeezed out and dropped through the table): docs/mjx.md;
- noisy grasps (--expert-noise 0.3): blocks 1.35 cm / 4.8 cm / 0.25 m / 0.62 m off with the table as a
  box, 0.51 / 2.84 / - / 3.71 cm with the table as a plane (the default; env 1: 3.7 cm). Init state 2's is
  chaotic natively (actions moved by 1e-9 move its block 26 cm), so no simulator could follow it;
  init state 3's is not (1e-6: 2 mm), and MJX's box-box collider, which finds other pad contacts than
  native on the same state (scripts/mjx_contact_probe.py), sends it elsewhere: ``xfail(strict=True)``
  with CONTACT_TOL 2 cm, so a fix shows up as an XPASS failure; a native check shows the env is
  not chaotic.
The "could fail" checks show the same comparisons exceed their tolerances for different actions and
shifted init states. Runtime on 2 CPU cores: 3.5-6 min (one compile of 0.5-1.5 min; 100 control steps of 3
envs, 2-3 s each), hence ``slow``.
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
FREE_IDS, CONTACT_IDS, CLEAN_GRASP_IDS = (0,), (3,), (1,)  # batch index 0: free space, 1: noisy grasp, 2: clean
BLOCKS = ("block0", "block1", "block2")
# Max over steps and envs of the position difference (m); see the module docstring.
FREE_TOL = 0.002
GRASP_TOL = 0.01
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


def native_run(init_id: int, actions: np.ndarray | None = None, expert_seed: int | None = None,
               expert_noise: float = 0.3):
    """(actions [STEPS, 7], ee [STEPS, 3], blocks [STEPS, 3, 3], first step a finger touches block0
    or STEPS) of the native env from ``init_id``; with ``expert_seed`` the actions come from a Lift
    expert (noise ``expert_noise``) acting on the native state."""
    run = native_trajectory(TASK, init_id, STEPS, BLOCKS, actions=actions, expert_seed=expert_seed,
                            expert_noise=expert_noise)
    return run.actions, run.ee, run.bodies, run.first_touch


@pytest.fixture(scope="module")
def runs():
    native = [native_run(i, actions=free_actions(i)) for i in FREE_IDS]
    native += [native_run(i, expert_seed=i) for i in CONTACT_IDS]
    native += [native_run(i, expert_seed=i, expert_noise=0.0) for i in CLEAN_GRASP_IDS]
    actions = np.stack([run[0] for run in native], axis=1)  # [STEPS, 3, 7]
    physics = MjxTabletopPhysics(TASK, num_envs=len(native))
    physics.reset(list(FREE_IDS + CONTACT_IDS + CLEAN_GRASP_IDS))
    ee, blocks = np.zeros((STEPS, len(native), 3)), np.zeros((STEPS, len(native), len(BLOCKS), 3))
    compiled_before = physics._step._cache_size()  # the jitted step is shared by physics of one scene
    for t in range(STEPS):
        physics.step(actions[t])
        ee[t], blocks[t] = physics.ee_position(), physics.body_positions(BLOCKS)
    native_ee = np.stack([run[1] for run in native], axis=1)
    native_blocks = np.stack([run[2] for run in native], axis=1)
    return {"ee": ee, "blocks": blocks, "native_ee": native_ee, "native_blocks": native_blocks,
            "physics": physics, "actions": actions, "first_touch": [run[3] for run in native],
            "compiles": physics._step._cache_size() - compiled_before}


def deviation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def test_free_space_agrees_with_native(runs):
    """Arm-only motion (blocks resting on the table) over all 100 steps."""
    free_ee = deviation(runs["ee"][:, 0], runs["native_ee"][:, 0]).max()
    free_blocks = deviation(runs["blocks"][:, 0], runs["native_blocks"][:, 0]).max()
    print(f"\nfree space, max deviation (m): ee {free_ee:.2e}, blocks {free_blocks:.2e}")
    assert free_ee < FREE_TOL and free_blocks < FREE_TOL


def test_a_hundred_steps_compile_once(runs):
    """The batched step returns the types it was given: were a step's output types not its input's, the
    next call would trace and compile the 50-substep loop again (a minute on a CPU)."""
    assert runs["compiles"] <= 1


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


def test_clean_grasp_and_lift_agree_with_native(runs):
    """Env 2: the fingers straddle the block, pinch it and lift it; every step, block and arm."""
    ee = deviation(runs["ee"][:, 2], runs["native_ee"][:, 2]).max()
    blocks = deviation(runs["blocks"][:, 2], runs["native_blocks"][:, 2]).max()
    native_height = runs["native_blocks"][-1, 2, 0, 2]
    print(f"\nclean grasp, max deviation (m): ee {ee:.2e}, blocks {blocks:.2e}; block0 height at the end: "
          f"native {native_height:.3f}, MJX {runs['blocks'][-1, 2, 0, 2]:.3f}")
    assert native_height > 0.2, "the clean expert no longer lifts the block: the test would not test a grasp"
    assert ee < FREE_TOL and blocks < GRASP_TOL


def test_noisy_grasp_is_not_chaotic_natively(runs):
    """Env 1's native trajectory barely moves when its actions move by 1e-6: were it chaotic (as the
    noisy grasp of init state 2 is), MJX could not be expected to follow it."""
    noise = 1e-6 * np.random.default_rng(0).standard_normal(runs["actions"][:, 1].shape)
    _, _, perturbed, _ = native_run(CONTACT_IDS[0], actions=runs["actions"][:, 1].astype(np.float64) + noise)
    assert deviation(perturbed, runs["native_blocks"][:, 1]).max() < GRASP_TOL


@pytest.mark.xfail(strict=True, reason="a pad lands on the block's edge, and MJX 3.9's box-box collider finds other "
                   "contacts than native's on the same state: the block goes elsewhere; see docs/mjx.md")
def test_noisy_grasp_agrees_with_native(runs):
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
    # the clean grasp's tolerance, against the clean expert's grasp of a neighbouring init state
    _, _, other_grasp, _ = native_run(CLEAN_GRASP_IDS[0] + 1, expert_seed=CLEAN_GRASP_IDS[0] + 1, expert_noise=0.0)
    assert deviation(runs["blocks"][:, 2], other_grasp).max() > GRASP_TOL


def test_success_predicate_runs_the_task_code(runs):
    physics = runs["physics"]
    lifted = physics.body_positions(["block0"])[:, 0, 2] > 0.1  # Lift: the target centre above 10 cm
    assert np.array_equal(physics.success(), lifted)
    assert physics.success()[2], "the clean grasp lifted the block natively, so MJX's predicate must say so"


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


def test_precision_sets_the_state_dtype_and_rejects_unknown_ones():
    """float64 by default (grasps need it, docs/mjx.md), float32 on request, scoped to the backend:
    the process-wide jax setting is left as it was."""
    import jax

    x64_before = jax.config.jax_enable_x64
    default, single = MjxTabletopPhysics("Reach", num_envs=1), MjxTabletopPhysics("Reach", 1, precision="float32")
    default.reset([0])
    single.reset([0])
    assert default.qpos().dtype == np.float64 and default.ee_position().dtype == np.float64
    assert single.qpos().dtype == np.float32
    assert jax.config.jax_enable_x64 == x64_before
    with pytest.raises(ValueError, match="precision must be one of"):
        MjxTabletopPhysics("Reach", num_envs=1, precision="float16")


def test_success_reads_contacts_for_stack():
    """Stack's predicate needs the contact list ("released": no finger touches the top block). The
    clean Stack expert of init state 1 has the block placed on the base while a finger still touches
    it at control step 12 and lets go at step 13: put both native states into the MJX batch and the
    backend's verdict must follow the contacts, not the positions alone."""
    from unittest import mock

    import mujoco

    import sim_envs.tasks as tasks
    from sim_envs.experts import make_expert
    from sim_envs.tabletop_env import SUBSTEPS

    physics = MjxTabletopPhysics("Stack", num_envs=2)
    physics.reset([1, 1])  # leaves physics.native at init state 1's reset state
    env, layout = physics.native, physics.layouts[0]
    expert = make_expert(env, noise_std=0.0, seed=1)
    states, verdicts, positional = [], [], []
    for step in range(14):
        env.arm.set_action(np.clip(expert.act(), -1, 1))
        mujoco.mj_step(env.model, env.data, nstep=SUBSTEPS)
        if step in (12, 13):
            states.append(physics._device_state())
            verdicts.append(env.task.is_success(env.model, env.data, layout))
            with mock.patch.object(tasks, "gripper_touches", lambda *args: False):
                positional.append(env.task.is_success(env.model, env.data, layout))
    assert verdicts == [False, True] and positional == [True, True], "the expert's release moved: pick other steps"
    physics.data = physics._batch(states)
    assert physics.success().tolist() == [False, True]


@pytest.mark.parametrize("command, clamped", [(1.0, True), (0.005, False)])
def test_clamped_damping_correction_matches_native_on_one_joint(command, clamped):
    """A servo (kp 100, kv 10, force range +-1) at rest, commanded 1 rad away, is clamped; 0.005 rad
    away it is not. Native MuJoCo's implicit step (``qDeriv``, filled by ``mj_step``) leaves the
    clamped one's kv out; MJX as shipped keeps it; inside the correction scope MJX agrees with native."""
    import mujoco
    from mujoco import mjx
    from mujoco.mjx._src import derivative

    from sim_envs import mjx_clamped_damping

    model = mujoco.MjModel.from_xml_string(mjx_clamped_damping._PROBE_XML)
    data = mujoco.MjData(model)
    data.ctrl[0] = command
    mujoco.mj_forward(model, data)
    device_model, device_data = mjx.put_model(model), mjx.put_data(model, data)
    native_step = mujoco.MjData(model)
    native_step.ctrl[0] = command
    mujoco.mj_step(model, native_step)
    native = float(native_step.qDeriv[0])  # one dof: the dense [0, 0]
    assert native == pytest.approx(0.0 if clamped else -10.0)
    needed = mjx_clamped_damping.install()  # MJX 3.9 needs it; a newer MJX may handle clamping itself
    shipped = float(derivative.deriv_smooth_vel(device_model, device_data)[0, 0])
    with mjx_clamped_damping.correction_scope():
        corrected = float(derivative.deriv_smooth_vel(device_model, device_data)[0, 0])
    assert shipped == pytest.approx(-10.0 if needed else native)
    assert corrected == pytest.approx(native)


@pytest.mark.parametrize("task", ["Push", "PickPlace", "OpenDrawer", "PressButton"])
def test_every_task_builds_resets_and_judges_success(task):
    """The other scenes (trays, cabinet, buttons, target squares) go to MJX with the table plane, reset
    from native states with their layouts' fixed bodies, and get the native verdict (no success at a
    reset). No step: that would compile each scene anew."""
    physics = MjxTabletopPhysics(task, num_envs=2)
    physics.reset([0, 1])
    np.testing.assert_allclose(physics.qpos()[1], physics.native.data.qpos, atol=1e-12)  # the last reset: id 1
    assert physics.success().tolist() == [False, False]
    assert not np.allclose(np.asarray(physics._body_pos)[0], np.asarray(physics._body_pos)[1])  # per-env layouts
