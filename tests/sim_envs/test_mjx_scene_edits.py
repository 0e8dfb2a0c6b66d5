"""The MJX copy's scene edits must not change the surfaces objects touch (fast: native MuJoCo only,
no jax): ``pads_as_meshes`` (the finger pads as convex meshes of the same boxes) and
``table_as_plane`` (the table as a plane through its top face)."""

from __future__ import annotations

import itertools

import mujoco
import numpy as np
import pytest

from sim_envs.init_states import get_layout
from sim_envs.mjx_backend import pads_as_meshes, table_as_plane
from sim_envs.tasks import TASKS
from sim_envs.tabletop_env import TabletopEnv

PADS = ("finger_left_pad", "finger_right_pad")


def world_corners(model: mujoco.MjModel, data: mujoco.MjData, geom: str) -> np.ndarray:
    """[8, 3] world corners of a box or mesh geom, sorted per axis (the order of corners differs)."""
    gid = model.geom(geom).id
    if model.geom_type[gid] == mujoco.mjtGeom.mjGEOM_MESH:
        mesh = int(model.geom_dataid[gid])
        start = model.mesh_vertadr[mesh]
        local = model.mesh_vert[start:start + model.mesh_vertnum[mesh]]
    else:
        local = np.array(list(itertools.product(*[(-h, h) for h in model.geom_size[gid]])))
    world = data.geom_xpos[gid] + local @ data.geom_xmat[gid].reshape(3, 3).T
    return np.sort(world, axis=0)


def test_pad_meshes_are_the_native_boxes_in_a_bent_pose():
    env = TabletopEnv("Lift")
    env._apply(get_layout("Lift", 2, "train"))
    env.data.qpos[:6] += np.array([0.3, -0.2, 0.4, 0.5, -0.3, 0.7])  # a pose where every joint turns
    env.data.qpos[6:8] = [0.01, 0.03]  # fingers apart by different amounts
    mujoco.mj_forward(env.model, env.data)
    meshes = mujoco.MjModel.from_xml_string(pads_as_meshes(env.scene_xml))
    meshes.body_pos[:] = env.model.body_pos
    data = mujoco.MjData(meshes)
    data.qpos[:] = env.data.qpos
    mujoco.mj_forward(meshes, data)
    for pad in PADS:
        assert meshes.geom_type[meshes.geom(pad).id] == mujoco.mjtGeom.mjGEOM_MESH
        assert meshes.mesh_vertnum[int(meshes.geom_dataid[meshes.geom(pad).id])] == 8
        np.testing.assert_allclose(world_corners(meshes, data, pad), world_corners(env.model, env.data, pad), atol=1e-9)
    # everything else is untouched: same geoms, same types, same contact settings
    assert meshes.ngeom == env.model.ngeom
    others = [g for g in range(env.model.ngeom) if env.model.geom(g).name not in PADS]
    np.testing.assert_array_equal(meshes.geom_type[others], env.model.geom_type[others])
    np.testing.assert_array_equal(meshes.geom_solref, env.model.geom_solref)
    np.testing.assert_array_equal(meshes.geom_friction, env.model.geom_friction)


def test_pads_as_meshes_refuses_a_scene_without_pads():
    with pytest.raises(ValueError, match="finger-pad"):
        pads_as_meshes("<mujoco><worldbody/></mujoco>")


def block_table_contacts(model: mujoco.MjModel, data: mujoco.MjData) -> list[tuple[str, float]]:
    """(object geom, penetration) of every contact with the table, sorted."""
    table = model.geom("table").id
    return sorted((model.geom(c.geom2 if c.geom1 == table else c.geom1).name, round(float(c.dist), 9))
                  for c in data.contact[:data.ncon] if table in (c.geom1, c.geom2))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_table_plane_is_the_table_top_where_objects_rest(task):
    """Every task's scene after its reset: the plane lies in the box's top face, and the objects'
    contacts with the table (which geoms, how deep) are those of the box, natively."""
    env = TabletopEnv(task)
    env._apply(get_layout(task, 1, "train"))
    plane = mujoco.MjModel.from_xml_string(table_as_plane(env.scene_xml))
    plane.body_pos[:] = env.model.body_pos
    data = mujoco.MjData(plane)
    data.qpos[:] = env.data.qpos
    mujoco.mj_forward(plane, data)
    mujoco.mj_forward(env.model, env.data)
    table_box, table_plane = env.model.geom("table"), plane.geom("table")
    assert table_plane.type == mujoco.mjtGeom.mjGEOM_PLANE
    assert table_plane.pos[2] == pytest.approx(table_box.pos[2] + table_box.size[2])
    native = block_table_contacts(env.model, env.data)
    has_free_objects = bool(np.any(env.model.jnt_type == mujoco.mjtJoint.mjJNT_FREE))
    assert bool(native) == has_free_objects, "free objects rest on the table after a reset (fixed ones do not touch it)"
    planar = block_table_contacts(plane, data)
    assert [name for name, _ in planar] == [name for name, _ in native]
    np.testing.assert_allclose([d for _, d in planar], [d for _, d in native], atol=1e-7)
    others = [g for g in range(env.model.ngeom) if g != table_box.id]
    np.testing.assert_array_equal(plane.geom_type[others], env.model.geom_type[others])
    np.testing.assert_array_equal(plane.geom_friction, env.model.geom_friction)


def test_table_as_plane_refuses_a_scene_without_a_table_box():
    with pytest.raises(ValueError, match="table"):
        table_as_plane("<mujoco><worldbody/></mujoco>")
