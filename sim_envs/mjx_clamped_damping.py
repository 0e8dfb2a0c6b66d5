"""Make MJX's implicit integrators treat force-clamped actuators as native MuJoCo does.

With ``implicitfast`` (the tabletop scenes' integrator) MuJoCo folds each actuator's velocity gain
(a position servo's ``kv``) into the implicit step. Native MuJoCo leaves out actuators whose force
is clamped at their ``forcerange`` that step: a clamped force does not change with velocity. MJX
3.9's ``deriv_smooth_vel`` keeps them, so whenever an arm joint saturates (full-scale actions do)
MJX damps it more than native MuJoCo does: 1.45 mm of end-effector drift in 6 control steps of the
noisy Lift expert, 0.0000 mm with this correction (docs/mjx.md, session 31).

``correction_scope()`` applies the correction to what MJX traces inside it, and only if this MJX
still lacks it (checked once on a one-joint model), so a newer MJX that handles clamping itself is
not corrected twice. Outside the scope MJX behaves as shipped, for any other user in the process.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

_ACTIVE = contextvars.ContextVar("mjx_clamped_damping_correction", default=False)

_PROBE_XML = """
<mujoco>
  <option integrator="implicitfast"/>
  <worldbody><body><joint name="hinge"/><geom size="0.1" mass="1"/></body></worldbody>
  <actuator><position joint="hinge" kp="100" kv="10" forcerange="-1 1"/></actuator>
</mujoco>
"""


def _clamped_velocity_gains(m, d):
    """[nu] the velocity gain of each actuator whose force sits at its clamp (0 elsewhere)."""
    from jax import numpy as jnp
    from mujoco.mjx._src.types import BiasType, DynType, GainType

    ctrl = d.ctrl.at[m.actuator_dyntype != DynType.NONE].set(d.act)
    velocity_gain = (m.actuator_biasprm[:, 2] * (m.actuator_biastype == BiasType.AFFINE)
                     + m.actuator_gainprm[:, 2] * (m.actuator_gaintype == GainType.AFFINE) * ctrl)
    low, high = m.actuator_forcerange[:, 0], m.actuator_forcerange[:, 1]
    clamped = m.actuator_forcelimited & ((d.actuator_force <= low) | (d.actuator_force >= high))
    return jnp.where(clamped, velocity_gain, 0.0)


def _corrected(original):
    """``deriv_smooth_vel`` without the clamped actuators' term, while a scope is active."""
    import jax
    from jax import numpy as jnp
    from mujoco.mjx._src.types import DisableBit

    def deriv_smooth_vel(m, d):
        qderiv = original(m, d)
        if not _ACTIVE.get() or qderiv is None or m.opt.disableflags & DisableBit.ACTUATION:
            return qderiv
        moment = d._impl.actuator_moment  # [nu, nv]
        return qderiv - moment.T @ jax.vmap(jnp.multiply)(moment, _clamped_velocity_gains(m, d))

    deriv_smooth_vel.corrects_clamped_damping = True
    return deriv_smooth_vel


def mjx_damps_clamped_actuators() -> bool:
    """Whether this MJX (as shipped) keeps a clamped actuator's velocity gain in its implicit step:
    a servo with ``kv`` 10 whose force is clamped, on a one-joint model."""
    import mujoco
    from mujoco import mjx
    from mujoco.mjx._src import derivative

    model = mujoco.MjModel.from_xml_string(_PROBE_XML)
    data = mujoco.MjData(model)
    data.ctrl[0] = 1.0  # kp * 1 rad = 100 N m, clamped at 1
    mujoco.mj_forward(model, data)
    token = _ACTIVE.set(False)
    try:
        qderiv = derivative.deriv_smooth_vel(mjx.put_model(model), mjx.put_data(model, data))
    finally:
        _ACTIVE.reset(token)
    return qderiv is not None and abs(float(qderiv[0, 0])) > 1.0


@functools.lru_cache(maxsize=None)
def install() -> bool:
    """Wrap MJX's ``deriv_smooth_vel`` once, if it needs the correction (the wrapper does nothing
    outside ``correction_scope``); whether it is wrapped. Call it outside jit traces."""
    from mujoco.mjx._src import derivative

    if getattr(derivative.deriv_smooth_vel, "corrects_clamped_damping", False):
        return True
    if not mjx_damps_clamped_actuators():
        return False
    derivative.deriv_smooth_vel = _corrected(derivative.deriv_smooth_vel)
    return True


@contextlib.contextmanager
def correction_scope(enabled: bool = True):
    """Inside: MJX steps traced here skip clamped actuators' damping, as native MuJoCo does (a jitted
    function keeps what its trace saw: enter the scope inside the traced function)."""
    token = _ACTIVE.set(bool(enabled) and install())
    try:
        yield
    finally:
        _ACTIVE.reset(token)
