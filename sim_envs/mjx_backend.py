"""MJX (jax) physics for the tabletop suite: thousands of envs stepped in parallel on an accelerator.

``MjxTabletopPhysics(task, num_envs)`` holds a batch of ``mjx.Data`` for one task's scene (the MJCF
of ``TabletopEnv``, unchanged) and steps it with ``jax.jit(jax.vmap(...))``. One control step does
what ``TabletopEnv.step`` does, minus the observation:

- the 7-D action becomes servo targets with the controller of ``sim_envs.arm.ArmController``,
  mirrored in jax: the goal pose from the current grip-site pose (read from the kinematics of the
  previous substep, as ``mj_step`` leaves them), ``IK_ITERATIONS`` damped-least-squares steps with
  the same damping, early stop (error < 1e-4), joint-limit clipping, and the same finger mapping.
  The site Jacobian of the six hinge joints is built from their world axes and anchors (what
  ``mj_jacSite`` computes for hinge joints); orientations come from ``xquat`` instead of
  ``mju_mat2Quat(site_xmat)`` (the same rotation; the sign of a quaternion does not matter here);
- then ``SUBSTEPS`` (50) ``mjx.step`` calls with those targets held, as ``mj_step(nstep=SUBSTEPS)``.

``reset`` runs the native reset (layout, home IK, settle substeps) on a CPU ``MjData`` per env and
copies the full state into the batch, so both backends start from the same state. Layouts that move
fixed bodies (trays, cabinet, buttons, target squares) are carried as a per-env ``body_pos``.

The MJX copy of the scene differs from native in two deliberate ways: the table is a plane through
its top face (``table_as_plane``; MJX's box-box collider mishandles a tipped block on it), and
MJX's implicit step leaves force-clamped actuators undamped as native MuJoCo does
(``sim_envs.mjx_clamped_damping``). It runs in float64 by default (``precision``; in float32 grasps
go wrong). Other differences: MJX's own collision and solver code, so trajectories part where
contacts start on edges; see docs/mjx.md for the measured agreement. There is no rendering: images
come from the native renderer (``TabletopEnv``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import mujoco
import numpy as np

from sim_envs import mjx_clamped_damping
from sim_envs.arm import IK_DAMPING, IK_ITERATIONS, MAX_POS_DELTA, MAX_ROT_DELTA
from sim_envs.init_states import get_layout
from sim_envs.scene import ARM_JOINTS, FINGER_JOINTS, FINGER_OPEN
from sim_envs.tabletop_env import SUBSTEPS, TabletopEnv

JAX_EXTRA = "pip install -e '.[jax]'"
IK_TOLERANCE = 1e-4
# MJX solver budget per substep. Native Newton (float64, tolerance 1e-8) needs at most 7 iterations
# on these scenes (measured: Reach, 100 random control steps, mean 1.3).
SOLVER_ITERATIONS = 8
LS_ITERATIONS = 8  # the early stop of sim_envs.arm.damped_least_squares_ik
# float64 first: in float32 the stiff finger-pad contacts of a grasp go wrong (docs/mjx.md).
PRECISIONS = ("float64", "float32")


def pads_as_meshes(scene_xml: str) -> str:
    """The scene with each finger pad (a box geom) replaced by an 8-vertex convex mesh of the same box,
    at the same place. MJX collides a box with a box through its box-box collider, which on the pads
    misses shallow contacts and reports one contact point as four (docs/mjx.md), and a box with a mesh
    through its general convex collider. Native MuJoCo keeps the boxes."""
    import re

    meshes = []

    def to_mesh(match: re.Match) -> str:
        half = [float(x) for x in match.group("size").split()]
        corners = [f"{sx * half[0]:g} {sy * half[1]:g} {sz * half[2]:g}"
                   for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
        name = f"pad_mesh_{len(meshes)}"
        meshes.append(f'<mesh name="{name}" vertex="{" ".join(corners)}"/>')
        return f'{match.group("head")}type="mesh" mesh="{name}"{match.group("pos")}'

    xml = re.sub(r'(?P<head><geom name="finger_\w+_pad" )type="box"(?P<pos> pos="[^"]*")? size="(?P<size>[^"]*)"',
                 to_mesh, scene_xml)
    if not meshes:
        raise ValueError("no finger-pad box geoms (finger_*_pad) in the scene")
    return xml.replace("</mujoco>", f"  <asset>{''.join(meshes)}</asset>\n</mujoco>", 1)


def table_as_plane(scene_xml: str) -> str:
    """The scene with the table's box geom replaced by a plane through its top face. Objects only
    ever touch that face, so the surface is the same where they are; MJX then collides blocks with
    the table through its plane collider instead of its box-box one, which on a tipped block reports
    contacts native MuJoCo does not (docs/mjx.md). Native MuJoCo keeps the box."""
    import re

    pattern = re.compile(r'<geom name="table" type="box" pos="(?P<x>\S+) (?P<y>\S+) (?P<z>\S+)" '
                         r'size="(?P<sx>\S+) (?P<sy>\S+) (?P<sz>\S+)"')
    match = pattern.search(scene_xml)
    if match is None:
        raise ValueError('no box geom named "table" in the scene')
    top = float(match["z"]) + float(match["sz"])
    plane = (f'<geom name="table" type="plane" pos="{match["x"]} {match["y"]} {top:g}" '
             f'size="{match["sx"]} {match["sy"]} {match["sz"]}"')
    return scene_xml[:match.start()] + plane + scene_xml[match.end():]


def require_mjx():
    """``(jax, jax.numpy, mujoco.mjx)``, or an ImportError naming the extra to install."""
    try:
        import jax
        import jax.numpy as jnp
        from mujoco import mjx
    except ImportError as error:
        raise ImportError(f"the MJX backend needs jax and mujoco-mjx: {JAX_EXTRA} ({error})") from error
    return jax, jnp, mjx


@dataclass(frozen=True)
class _Indices:
    """Static model addresses the controller needs (hashable: it keys the jit cache)."""

    site: int
    site_body: int
    arm_joints: tuple[int, ...]
    arm_qpos: tuple[int, ...]
    arm_act: tuple[int, ...]
    finger_act: tuple[int, ...]

    @classmethod
    def of(cls, model: mujoco.MjModel) -> "_Indices":
        site = model.site("grip_site").id
        return cls(site, int(model.site_bodyid[site]), tuple(model.joint(j).id for j in ARM_JOINTS),
                   tuple(int(model.joint(j).qposadr[0]) for j in ARM_JOINTS),
                   tuple(model.actuator(f"a_{j}").id for j in ARM_JOINTS),
                   tuple(model.actuator(f"a_{j}").id for j in FINGER_JOINTS))


# ---- quaternion maths in jax (w, x, y, z), mirroring sim_envs.arm ---------------------------------
def _quat_mul(a, b):
    import jax.numpy as jnp

    return jnp.array([a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
                      a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
                      a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
                      a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0]])


def _quat_to_axis_angle(quat):
    import jax.numpy as jnp

    quat = quat / jnp.linalg.norm(quat)
    quat = jnp.where(quat[0] < 0, -quat, quat)
    sin_half = jnp.linalg.norm(quat[1:])
    angle = 2.0 * jnp.arctan2(sin_half, quat[0])
    # max() keeps the unused branch finite (a NaN there would poison gradients and where()).
    return jnp.where(sin_half < 1e-9, 0.0, quat[1:] / jnp.maximum(sin_half, 1e-9) * angle)


def _axis_angle_to_quat(rotvec):
    import jax.numpy as jnp

    angle = jnp.linalg.norm(rotvec)
    axis = rotvec / jnp.maximum(angle, 1e-12)
    quat = jnp.concatenate([jnp.cos(angle / 2)[None], jnp.sin(angle / 2) * axis])
    return jnp.where(angle < 1e-12, jnp.array([1.0, 0.0, 0.0, 0.0]), quat)


def _site_pose(m, d, idx: _Indices):
    """Grip-site position [3] and quaternion [4] from ``d``'s kinematics fields."""
    return d.site_xpos[idx.site], _quat_mul(d.xquat[idx.site_body], m.site_quat[idx.site])


def _control(m, d, action, idx: _Indices):
    """``ctrl`` [nu] for one env: ``ArmController.set_action`` in jax. ``action`` [7]."""
    import jax
    import jax.numpy as jnp
    from mujoco import mjx

    action = jnp.clip(action, -1.0, 1.0)
    ee_pos, ee_quat = _site_pose(m, d, idx)
    goal_pos = ee_pos + action[:3] * MAX_POS_DELTA
    goal_quat = _quat_mul(_axis_angle_to_quat(action[3:6] * MAX_ROT_DELTA), ee_quat)
    arm_qpos, joints = jnp.array(idx.arm_qpos), jnp.array(idx.arm_joints)
    low, high = m.jnt_range[joints, 0], m.jnt_range[joints, 1]

    def ik_iteration(_, carry):
        q, done = carry
        k = mjx.kinematics(m, d.replace(qpos=d.qpos.at[arm_qpos].set(q)))
        pos, quat = _site_pose(m, k, idx)
        error = jnp.concatenate([goal_pos - pos, _quat_to_axis_angle(_quat_mul(goal_quat, quat * jnp.array(
            [1.0, -1.0, -1.0, -1.0])))])
        done = done | (jnp.linalg.norm(error) < IK_TOLERANCE)  # native: break before the update
        axes = k.xaxis[joints]  # [6, 3] world hinge axes: the rotational Jacobian's columns
        jac = jnp.concatenate([jnp.cross(axes, pos - k.xanchor[joints]).T, axes.T])  # [6 pose, 6 joints]
        step = jac.T @ jnp.linalg.solve(jac @ jac.T + IK_DAMPING**2 * jnp.eye(6), error)
        return jnp.where(done, q, jnp.clip(q + step, low, high)), done

    # A loop, not unrolled: four copies of the kinematics would lengthen the XLA compile.
    q, _ = jax.lax.fori_loop(0, IK_ITERATIONS, ik_iteration, (d.qpos[arm_qpos], jnp.array(False)))
    finger = FINGER_OPEN * (1.0 - action[6]) / 2.0
    return d.ctrl.at[jnp.array(idx.arm_act)].set(q).at[jnp.array(idx.finger_act)].set(finger)


def copy_native_state(native_model: mujoco.MjModel, native_data: mujoco.MjData, model: mujoco.MjModel,
                      data: mujoco.MjData) -> None:
    """Put the native env's state into ``data`` of another model of the same scene (other contact settings or
    geoms): the layout's fixed bodies, the integration state (positions, velocities, controls, warm start),
    then kinematics recomputed there."""
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(native_model, spec))
    mujoco.mj_getState(native_model, native_data, state, spec)
    model.body_pos[:] = native_model.body_pos
    mujoco.mj_setState(model, data, state, spec)
    mujoco.mj_forward(model, data)


@functools.lru_cache(maxsize=None)
def _batched_step(idx: _Indices, native_clamped_damping: bool):
    """jit(vmap(control step)) for a scene layout; the model is an argument so tasks with the same
    scene (Reach, Lift, Stack) share one compilation. Shapes: body_pos [N, nbody, 3], data batched
    [N, ...], actions [N, 7]. ``native_clamped_damping``: see ``sim_envs.mjx_clamped_damping``."""
    jax, _, mjx = require_mjx()

    def one_env(m, body_pos, given, action):
        m = m.replace(body_pos=body_pos)
        d = given.replace(ctrl=_control(m, given, action, idx))
        # Under jax x64, put_data leaves some index fields int32 while mjx.step returns int64: the loop's
        # carry must keep one type, so cast the input to what a step returns (a no-op in float32 mode)...
        stepped = jax.eval_shape(lambda x: mjx.step(m, x), d)
        d = jax.tree.map(lambda x, like: x.astype(like.dtype), d, stepped)
        with mjx_clamped_damping.correction_scope(native_clamped_damping):  # active while this traces
            d = jax.lax.fori_loop(0, SUBSTEPS, lambda _, x: mjx.step(m, x), d)
        # ...and return the types it was given: the next call's input then has the same types as this one's,
        # so jit compiles once (returning int64 fields made the second step compile the whole loop again).
        return jax.tree.map(lambda x, like: x.astype(like.dtype), d, given)

    return jax.jit(jax.vmap(one_env, in_axes=(None, 0, 0, 0)))


class MjxTabletopPhysics:
    """A batch of ``num_envs`` copies of one tabletop task's physics, stepped with MJX.

    All read-outs are numpy with the batch first. Positions are those ``mj_step`` leaves in ``MjData``
    (kinematics of the last substep's start), the same the native env reports."""

    def __init__(self, task: str, num_envs: int, solver_iterations: int = SOLVER_ITERATIONS,
                 ls_iterations: int = LS_ITERATIONS, adjust_model: Callable[[mujoco.MjModel], None] | None = None,
                 pad_meshes: bool = False, precision: str = "float64", native_clamped_damping: bool = True,
                 table_plane: bool = True):
        """``precision`` "float64" (the default) runs model, state and controller in double precision
        inside ``jax.enable_x64`` (only this object's jax calls; the process-wide flag is left alone):
        grasps then follow native MuJoCo (docs/mjx.md). "float32" is faster on accelerators but its
        stiff finger-pad contacts go wrong: pinched blocks are squeezed out, launched or dropped through
        the table. ``native_clamped_damping`` (default on) leaves force-clamped actuators out of the
        implicit integrator's damping, as native MuJoCo does and MJX 3.9 does not
        (``sim_envs.mjx_clamped_damping``; without it a saturating arm drifts by millimetres).
        ``adjust_model`` edits the MJX copy of the model in place before it goes to the device (contact
        settings, say; ``scripts/mjx_grasp_probe.py``); ``pad_meshes`` gives that copy the finger pads as
        convex meshes of the same boxes (``pads_as_meshes``); ``table_plane`` (default on) gives it the
        table as a plane through its top face (``table_as_plane``). The native reference keeps the
        scene's own."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.jax, self.jnp, self.mjx = require_mjx()
        self.task_name, self.num_envs = task, num_envs
        self.native = TabletopEnv(task)  # the reference: model, reset logic, success predicates
        self.model = self.native.model
        # The MJX copy gets a solver budget: float32 rarely meets the scene's 1e-8 tolerance, so MJX
        # would run all 100 Newton iterations every substep. Native Newton converges in <= 7.
        scene_xml = table_as_plane(self.native.scene_xml) if table_plane else self.native.scene_xml
        scene_xml = pads_as_meshes(scene_xml) if pad_meshes else scene_xml
        solver_model = mujoco.MjModel.from_xml_string(scene_xml)
        solver_model.opt.iterations, solver_model.opt.ls_iterations = solver_iterations, ls_iterations
        if adjust_model is not None:
            adjust_model(solver_model)
        self.solver_model = solver_model
        self._scratch = mujoco.MjData(solver_model)
        with self._precision_scope():
            self.mjx_model = self.mjx.put_model(solver_model)
        self._idx = _Indices.of(self.model)
        # True only where this MJX needed the correction and got it (a newer MJX may not need it).
        self.native_clamped_damping = native_clamped_damping and mjx_clamped_damping.install()
        self._step = _batched_step(self._idx, self.native_clamped_damping)
        self.layouts: list[dict] = []
        self.data = None  # batched mjx.Data once reset
        self._body_pos = None  # [N, nbody, 3]

    def reset(self, init_state_ids: Sequence[int], split: str = "train") -> None:
        """Set env ``i`` to init state ``init_state_ids[i]`` of ``split`` ("train" | "eval")."""
        if len(init_state_ids) != self.num_envs:
            raise ValueError(f"need {self.num_envs} init state ids, got {len(init_state_ids)}")
        states, body_pos, self.layouts = [], [], []
        for state_id in init_state_ids:
            layout = get_layout(self.task_name, int(state_id), split)
            self.native._apply(layout)  # the native reset itself: layout, home IK, settle substeps
            states.append(self._device_state())
            body_pos.append(self.model.body_pos.copy())
            self.layouts.append(layout)
        self.data = self._batch(states)
        with self._precision_scope():
            self._body_pos = self.jnp.asarray(np.stack(body_pos), dtype=self.mjx_model.body_pos.dtype)

    def _batch(self, states: Sequence) -> object:
        """One batched ``mjx.Data`` of per-env states (``_device_state``), at this object's precision."""
        with self._precision_scope():
            return self.jax.tree.map(lambda *xs: self.jnp.stack(xs), *states)

    def _precision_scope(self):
        """The jax x64 setting of ``precision`` for the calls inside (jit traces and caches each apart)."""
        return self.jax.enable_x64(self.precision == "float64")

    def _device_state(self):
        """The native env's state as ``mjx.Data`` of the MJX copy: the integration state (positions,
        velocities, controls, warm start) goes through a scratch ``MjData`` of that copy, whose contact
        settings may differ (``adjust_model``), and its kinematics are recomputed there."""
        copy_native_state(self.model, self.native.data, self.solver_model, self._scratch)
        with self._precision_scope():
            return self.mjx.put_data(self.solver_model, self._scratch)

    def step(self, actions: np.ndarray) -> None:
        """One control step (``SUBSTEPS`` physics steps) of every env. ``actions`` [N, 7] in [-1, 1]."""
        actions = np.asarray(actions, dtype=np.float64)  # cast to the model's precision below, not before
        if actions.shape != (self.num_envs, 7) or not np.all(np.isfinite(actions)):
            raise ValueError(f"actions must be finite with shape ({self.num_envs}, 7), got {actions.shape}")
        if self.data is None:
            raise RuntimeError("call reset() before step()")
        with self._precision_scope():
            dtype = self.mjx_model.body_pos.dtype
            self.data = self._step(self.mjx_model, self._body_pos, self.data, self.jnp.asarray(actions, dtype=dtype))

    # ---- read-outs (numpy, batch first) -------------------------------------------------------------
    def qpos(self) -> np.ndarray:
        """[N, nq]"""
        return np.asarray(self.data.qpos)

    def qvel(self) -> np.ndarray:
        """[N, nv]"""
        return np.asarray(self.data.qvel)

    def ee_position(self) -> np.ndarray:
        """[N, 3] grip-site position (m, world frame)."""
        return np.asarray(self.data.site_xpos[:, self._idx.site])

    def body_positions(self, bodies: Sequence[str]) -> np.ndarray:
        """[N, len(bodies), 3] world positions of the named bodies (e.g. ``["block0"]``)."""
        ids = [self.model.body(name).id for name in bodies]
        return np.asarray(self.data.xpos[:, ids])

    def success(self) -> np.ndarray:
        """[N] bool: the task's own predicate on each env's state, judged by native MuJoCo: each env's
        positions (and its layout's fixed bodies) go into a scratch ``MjData`` whose kinematics and
        contacts native MuJoCo recomputes, so predicates that read the contact list (Stack, PickPlace:
        "released") work too."""
        scratch = mujoco.MjData(self.model)
        qpos, body_pos = self.qpos(), np.asarray(self._body_pos)
        saved_body_pos = self.model.body_pos.copy()
        result = np.zeros(self.num_envs, dtype=bool)
        try:
            for i, layout in enumerate(self.layouts):
                self.model.body_pos[:] = body_pos[i]
                scratch.qpos[:] = qpos[i]
                mujoco.mj_fwdPosition(self.model, scratch)  # kinematics and the contact list
                result[i] = self.native.task.is_success(self.model, scratch, layout)
        finally:
            self.model.body_pos[:] = saved_body_pos
        return result


@dataclass
class NativeTrajectory:
    actions: np.ndarray  # [T, 7] as taken (before clipping)
    ee: np.ndarray  # [T, 3] grip site after each control step
    bodies: np.ndarray  # [T, len(bodies), 3]
    first_touch: int  # first control step after which a finger touches ``touch_body`` (T if never)


def native_trajectory(task: str, init_id: int, steps: int, bodies: Sequence[str], actions: np.ndarray | None = None,
                      expert_seed: int | None = None, expert_noise: float = 0.3, touch_body: str = "block0",
                      split: str = "train") -> NativeTrajectory:
    """The native reference for MJX comparisons: ``TabletopEnv``'s physics from ``init_id`` under
    ``actions`` [steps, 7] open loop, or under a noisy scripted expert acting on the native state
    (``expert_seed``), without rendering."""
    from sim_envs.experts import make_expert
    from sim_envs.tasks import gripper_touches

    if (actions is None) == (expert_seed is None):
        raise ValueError("give either actions or expert_seed")
    env = TabletopEnv(task)
    env._apply(get_layout(task, init_id, split))  # TabletopEnv.reset without rendering an observation
    expert = make_expert(env, noise_std=expert_noise, seed=expert_seed) if expert_seed is not None else None
    taken, ee, positions = np.zeros((steps, 7)), np.zeros((steps, 3)), np.zeros((steps, len(bodies), 3))
    first_touch = steps
    for t in range(steps):
        taken[t] = expert.act() if expert is not None else actions[t]
        env.arm.set_action(np.clip(taken[t], -1, 1))  # what TabletopEnv.step does before rendering
        mujoco.mj_step(env.model, env.data, nstep=SUBSTEPS)
        ee[t], positions[t] = env.arm.ee_position(), [env.data.body(b).xpos for b in bodies]
        if first_touch == steps and gripper_touches(env.model, env.data, touch_body):
            first_touch = t
    return NativeTrajectory(taken, ee, positions, first_touch)
