"""The tabletop tasks: their objects, how init states (layouts) are sampled, and success predicates.

A *layout* is a JSON-serialisable dict that fully determines an episode's initial state: object
colours, positions and yaws, which object is the target, the instruction text, and where the
gripper starts. Evaluation layouts are frozen in ``sim_envs/init_states/*.json``; training layouts
are drawn from a disjoint seed stream (see ``sim_envs.init_states``).

Every task has distractors of other colours, so the instruction must be read to succeed.

Besides the binary success predicate every task has a dense ``progress`` in [0, 1] (the training
label of a learned reward critic): weighted stages built from the same simulator quantities the
success predicates and scripted experts use, always about the instruction's target objects. It is
1.0 exactly when the task is solved and at most ``PROGRESS_CAP`` otherwise; distances are
normalised by the same distance at the episode's start (read from the layout), so the first frame
scores about 0 whatever the layout.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np

from sim_envs.scene import BLOCK_HALF, COLORS, block_xml

Layout = dict[str, Any]

# Where objects may be placed: reachable, in view of the agent camera, clear of the robot base.
WORKSPACE_X = (-0.18, 0.16)
WORKSPACE_Y = (-0.2, 0.2)
EE_START_JITTER = 0.03
EE_START = np.array([-0.05, 0.0, 0.22])


def sample_positions(
    rng: np.random.Generator,
    count: int,
    min_distance: float,
    x_range: tuple[float, float] = WORKSPACE_X,
    y_range: tuple[float, float] = WORKSPACE_Y,
    avoid: list[np.ndarray] | None = None,
    avoid_distance: float | None = None,
) -> list[np.ndarray]:
    """``count`` xy points pairwise ``min_distance`` apart and ``avoid_distance`` from ``avoid``."""
    avoid = list(avoid or [])
    avoid_distance = min_distance if avoid_distance is None else avoid_distance
    points: list[np.ndarray] = []
    for _ in range(10_000):
        candidate = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
        if all(np.linalg.norm(candidate - p) >= min_distance for p in points) and all(
            np.linalg.norm(candidate - p) >= avoid_distance for p in avoid
        ):
            points.append(candidate)
            if len(points) == count:
                return points
    raise RuntimeError(f"could not place {count} objects {min_distance} m apart")


def rounded(points) -> list[list[float]]:
    """Points as plain lists rounded to 0.01 mm: readable JSON layouts, exact round trips."""
    return [[round(float(v), 5) for v in point] for point in points]


def pick_colors(rng: np.random.Generator, count: int) -> list[str]:
    names = list(COLORS)
    return [names[i] for i in rng.choice(len(names), size=count, replace=False)]


def set_free_body(model: mujoco.MjModel, data: mujoco.MjData, body: str, pos, yaw: float) -> None:
    joint = model.body(body).jntadr[0]
    qadr, vadr = model.jnt_qposadr[joint], model.jnt_dofadr[joint]
    data.qpos[qadr : qadr + 3] = pos
    data.qpos[qadr + 3 : qadr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    data.qvel[vadr : vadr + 6] = 0.0


def set_color(model: mujoco.MjModel, geom: str, color: str, alpha: float = 1.0) -> None:
    model.geom_rgba[model.geom(geom).id] = (*COLORS[color], alpha)


def body_position(data: mujoco.MjData, body: str) -> np.ndarray:
    return data.body(body).xpos.copy()


def gripper_touches(model: mujoco.MjModel, data: mujoco.MjData, body: str) -> bool:
    """Whether either finger is in contact with ``body`` (i.e. the object is not yet released)."""
    target = model.body(body).id
    fingers = {model.body("finger_left_body").id, model.body("finger_right_body").id}
    bodies1 = model.geom_bodyid[data.contact.geom1]
    bodies2 = model.geom_bodyid[data.contact.geom2]
    return any((a == target and b in fingers) or (b == target and a in fingers) for a, b in zip(bodies1, bodies2))


def gripper_holds(model: mujoco.MjModel, data: mujoco.MjData, body: str) -> bool:
    """Whether *both* fingers are in contact with ``body``: pinched, not just brushed by one finger."""
    target = model.body(body).id
    fingers = {model.body("finger_left_body").id, model.body("finger_right_body").id}
    touching = set()
    for a, b in zip(model.geom_bodyid[data.contact.geom1], model.geom_bodyid[data.contact.geom2]):
        if a == target and b in fingers:
            touching.add(b)
        elif b == target and a in fingers:
            touching.add(a)
    return touching == fingers


def body_yaw(data: mujoco.MjData, body: str) -> float:
    mat = data.body(body).xmat.reshape(3, 3)
    return float(np.arctan2(mat[1, 0], mat[0, 0]))


# ---- progress helpers -------------------------------------------------------------------------
PROGRESS_CAP = 0.95  # progress of any unsolved state stays below this; only success scores 1.0
MIN_SCALE = 0.02  # a normalising distance is never shorter than this (no division by ~0)
LIFTED = 0.05  # a block whose bottom is this far above the table counts as fully lifted


def closeness(distance: float, scale: float) -> float:
    """1 at ``distance`` 0, falling linearly to 0 at ``scale`` and beyond."""
    return float(np.clip(1.0 - distance / max(scale, MIN_SCALE), 0.0, 1.0))


def grip_position(data: mujoco.MjData) -> np.ndarray:
    """The end effector's grip site (between the fingertips): what ``ArmController`` moves."""
    return data.site("grip_site").xpos.copy()


def approach(data: mujoco.MjData, layout: Layout, goal, goal_at_start) -> float:
    """How far the grip site has come from its start (``layout["ee_start"]``) towards ``goal``."""
    start_distance = np.linalg.norm(np.asarray(layout["ee_start"]) - np.asarray(goal_at_start))
    return closeness(float(np.linalg.norm(grip_position(data) - goal)), float(start_distance))


def lifted(block_position: np.ndarray) -> float:
    """Fraction of the way to a ``LIFTED`` block (0 while it rests on the table)."""
    return float(np.clip((block_position[2] - BLOCK_HALF) / LIFTED, 0.0, 1.0))


def on_table(xy) -> np.ndarray:
    """Where a block laid out at ``xy`` rests: its centre, ``BLOCK_HALF`` above the table."""
    return np.array([xy[0], xy[1], BLOCK_HALF])


class Task:
    """One tabletop task. Subclasses set the class attributes and the methods below (``progress`` is shared)."""

    name: ClassVar[str]
    max_steps: ClassVar[int]
    templates: ClassVar[tuple[str, ...]]
    summary: ClassVar[str]

    def objects_xml(self) -> str:
        raise NotImplementedError

    def sample_layout(self, rng: np.random.Generator) -> Layout:
        raise NotImplementedError

    def apply_layout(self, model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> None:
        raise NotImplementedError

    def is_success(self, model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> bool:
        raise NotImplementedError

    def progress(self, model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> float:
        """Dense progress in [0, 1]: 1.0 exactly when ``is_success``, else ``stage_progress`` capped
        at ``PROGRESS_CAP``. Reads the current state only (no history)."""
        if self.is_success(model, data, layout):
            return 1.0
        return float(np.clip(self.stage_progress(model, data, layout), 0.0, PROGRESS_CAP))

    def stage_progress(self, model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> float:
        """The weighted stages of an unsolved state; each task's docstring lists them."""
        raise NotImplementedError

    def named_points(self, model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> np.ndarray:
        """``[2, 3]`` world positions, now, of what the instruction names: the object acted on, then
        where it must go (the same point twice in one-object tasks). Labels for a localiser."""
        raise NotImplementedError

    def other_objectives(self, layout: Layout) -> list[Layout]:
        """The same scene with another of its objects named: one layout per other choice of the named
        object(s), with the instruction rewritten in the same template. ``progress``, ``is_success`` and
        ``named_points`` read them like the real one, so a recorded episode can be labelled with how far
        it got at a task it was *not* asked to do: the hard negatives of a reward critic (an instruction
        naming a distractor of the same scene earns only the progress made towards that distractor)."""
        raise NotImplementedError

    def _renamed(self, layout: Layout, words: dict[str, str], **indices: int) -> Layout:
        return {**layout, **indices, "instruction": self.templates[layout["template"]].format(**words)}

    def _block_and_place_objectives(self, layout: Layout, place: str) -> list[Layout]:
        """``other_objectives`` of a task with two blocks and two places (``place``: "zone" or "tray",
        also its word in the templates): every other (block, place) pair. Colours are block0, block1,
        place0, place1; a sampled layout names block 0 and place 0."""
        colors, named = layout["colors"], (layout.get("block", 0), layout.get(place, 0))
        return [self._renamed(layout, {"color": colors[block], place: colors[2 + spot]}, block=block, **{place: spot})
                for block in range(2) for spot in range(2) if (block, spot) != named]

    # shared helpers ----------------------------------------------------------------------
    def _common(self, rng: np.random.Generator, **words: str) -> Layout:
        template = int(rng.integers(len(self.templates)))
        ee = EE_START + rng.uniform(-EE_START_JITTER, EE_START_JITTER, size=3)
        return {
            "template": template,
            "instruction": self.templates[template].format(**words),
            "ee_start": [round(float(v), 5) for v in ee],
        }


def _blocks_layout(rng: np.random.Generator, count: int) -> tuple[list[str], list[list[float]], list[float]]:
    colors = pick_colors(rng, count)
    positions = sample_positions(rng, count, min_distance=0.1)
    yaws = rng.uniform(-np.pi / 4, np.pi / 4, size=count)
    return colors, rounded(positions), [round(float(y), 5) for y in yaws]


def _apply_blocks(model, data, layout: Layout) -> None:
    for i, (color, xy, yaw) in enumerate(zip(layout["colors"], layout["positions"], layout["yaws"])):
        set_color(model, f"block{i}_geom", color)
        set_free_body(model, data, f"block{i}", [xy[0], xy[1], BLOCK_HALF], yaw)


class BlocksTask(Task):
    """Tasks over ``num_blocks`` coloured cubes; ``target`` indexes the block named in the instruction."""

    num_blocks: ClassVar[int] = 3

    def objects_xml(self) -> str:
        return "".join(block_xml(f"block{i}") for i in range(self.num_blocks))

    def sample_layout(self, rng: np.random.Generator) -> Layout:
        colors, positions, yaws = _blocks_layout(rng, self.num_blocks)
        layout = self._common(rng, color=colors[0])
        layout.update(colors=colors, positions=positions, yaws=yaws, target=0)
        return layout

    def apply_layout(self, model, data, layout: Layout) -> None:
        _apply_blocks(model, data, layout)

    def target_position(self, data: mujoco.MjData, layout: Layout) -> np.ndarray:
        return body_position(data, f"block{layout['target']}")

    def target_start(self, layout: Layout) -> np.ndarray:
        return on_table(layout["positions"][layout["target"]])

    def named_points(self, model, data, layout) -> np.ndarray:
        target = self.target_position(data, layout)
        return np.stack([target, target])

    def other_objectives(self, layout: Layout) -> list[Layout]:
        return [self._renamed(layout, {"color": layout["colors"][i]}, target=i)
                for i in range(self.num_blocks) if i != layout["target"]]


class Reach(BlocksTask):
    name = "Reach"
    max_steps = 50
    summary = "bring the gripper within 5 cm of the named block"
    templates = ("touch the {color} block", "reach for the {color} block", "move the gripper to the {color} cube")
    SUCCESS_DISTANCE = 0.05

    def is_success(self, model, data, layout) -> bool:
        grip = data.site("grip_site").xpos
        return bool(np.linalg.norm(grip - self.target_position(data, layout)) < self.SUCCESS_DISTANCE)

    def stage_progress(self, model, data, layout) -> float:
        """approach (0.5): the grip site from its start towards the target block;
        close in (0.5): its last ``SUCCESS_DISTANCE`` before the success radius. Blocks are laid out
        10 cm apart, so hovering at a distractor never scores the second stage."""
        target = self.target_position(data, layout)
        distance = float(np.linalg.norm(grip_position(data) - target))
        close_in = closeness(distance - self.SUCCESS_DISTANCE, self.SUCCESS_DISTANCE)
        return 0.5 * approach(data, layout, target, self.target_start(layout)) + 0.5 * close_in


class Lift(BlocksTask):
    name = "Lift"
    max_steps = 70
    summary = "grasp the named block and lift it (centre above 10 cm)"
    templates = ("pick up the {color} block", "lift the {color} cube", "grab the {color} block and raise it")
    LIFT_HEIGHT = 0.1

    def is_success(self, model, data, layout) -> bool:
        return bool(self.target_position(data, layout)[2] > self.LIFT_HEIGHT)

    def stage_progress(self, model, data, layout) -> float:
        """reach (0.3): the grip site towards the target block; grasp (0.2): both fingers touch it;
        lift (0.5): its centre's height from resting towards ``LIFT_HEIGHT``."""
        block = self.target_position(data, layout)
        reach = approach(data, layout, block, self.target_start(layout))
        grasped = gripper_holds(model, data, f"block{layout['target']}")
        height = np.clip((block[2] - BLOCK_HALF) / (self.LIFT_HEIGHT - BLOCK_HALF), 0.0, 1.0)
        return 0.3 * reach + 0.2 * grasped + 0.5 * height


class Stack(BlocksTask):
    name = "Stack"
    max_steps = 100
    summary = "put the named block on the other named block and let go"
    templates = (
        "stack the {color} block on the {base} block",
        "put the {color} cube on top of the {base} cube",
        "place the {color} block onto the {base} block",
    )

    def sample_layout(self, rng: np.random.Generator) -> Layout:
        colors, positions, yaws = _blocks_layout(rng, self.num_blocks)
        layout = self._common(rng, color=colors[0], base=colors[1])
        layout.update(colors=colors, positions=positions, yaws=yaws, target=0, base=1)
        return layout

    def named_points(self, model, data, layout) -> np.ndarray:
        return np.stack([body_position(data, f"block{layout['target']}"), body_position(data, f"block{layout['base']}")])

    def other_objectives(self, layout: Layout) -> list[Layout]:
        colors = layout["colors"]
        return [self._renamed(layout, {"color": colors[top], "base": colors[base]}, target=top, base=base)
                for top in range(self.num_blocks) for base in range(self.num_blocks)
                if top != base and (top, base) != (layout["target"], layout["base"])]

    def is_success(self, model, data, layout) -> bool:
        top = body_position(data, f"block{layout['target']}")
        base = body_position(data, f"block{layout['base']}")
        aligned = np.linalg.norm(top[:2] - base[:2]) < BLOCK_HALF
        resting_on = abs((top[2] - base[2]) - 2 * BLOCK_HALF) < 0.008
        return bool(aligned and resting_on and not gripper_touches(model, data, f"block{layout['target']}"))

    def stage_progress(self, model, data, layout) -> float:
        """Nested stages, the furthest one reached counts:
        - top block centred above the base: 0.8, resting on it (still held) 0.9, released: success;
        - else top block held (both fingers touch it): 0.3 + lift (0.15: its bottom towards ``LIFTED``
          above the table) + carry (0.35: its xy distance to the base, from the start distance);
        - else reach (0.2): the grip site towards the top block."""
        top_name = f"block{layout['target']}"
        top, base = body_position(data, top_name), body_position(data, f"block{layout['base']}")
        if np.linalg.norm(top[:2] - base[:2]) < BLOCK_HALF and top[2] > base[2] + BLOCK_HALF:
            return 0.8 + 0.1 * (abs((top[2] - base[2]) - 2 * BLOCK_HALF) < 0.008)
        if gripper_holds(model, data, top_name):
            start_gap = np.subtract(layout["positions"][layout["target"]], layout["positions"][layout["base"]])
            carry = closeness(float(np.linalg.norm(top[:2] - base[:2])), float(np.linalg.norm(start_gap)))
            return 0.3 + 0.15 * lifted(top) + 0.35 * carry
        return 0.2 * approach(data, layout, top, self.target_start(layout))


def _zone_xml(name: str, half: float) -> str:
    # Visual only (no collisions): a coloured square painted on the table.
    return f"""
    <body name="{name}" pos="0 0 0.0005">
      <geom name="{name}_geom" type="box" size="{half} {half} 0.0005" rgba="1 1 1 1" contype="0" conaffinity="0"/>
    </body>"""


class Push(Task):
    """Push one block onto the named coloured target square; a second square and block distract."""

    name = "Push"
    max_steps = 100
    summary = "push the named block onto the named target square"
    templates = (
        "push the {color} block to the {zone} target",
        "slide the {color} cube onto the {zone} square",
        "push the {color} block onto the {zone} mark",
    )
    ZONE_HALF = 0.045
    SUCCESS_DISTANCE = 0.04
    MAX_HEIGHT = 0.04  # a pushed block stays on the table: its centre below this
    PUSH_STANDOFF = BLOCK_HALF + 0.035  # the grip site's spot behind the block, away from the target
    PUSH_HEIGHT = 0.03  # ... at this height (fingertips just above the table)

    def objects_xml(self) -> str:
        return block_xml("block0") + block_xml("block1") + _zone_xml("zone0", self.ZONE_HALF) + _zone_xml(
            "zone1", self.ZONE_HALF
        )

    def sample_layout(self, rng: np.random.Generator) -> Layout:
        colors = pick_colors(rng, 4)  # block0, block1, zone0, zone1
        for _ in range(1000):
            block = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.12, 0.12)])
            angle = rng.uniform(0, 2 * np.pi)
            distance = rng.uniform(0.12, 0.18)
            zone = block + distance * np.array([np.cos(angle), np.sin(angle)])
            if WORKSPACE_X[0] <= zone[0] <= WORKSPACE_X[1] and WORKSPACE_Y[0] <= zone[1] <= WORKSPACE_Y[1]:
                break
        else:
            raise RuntimeError("could not place a push target inside the workspace")
        others = sample_positions(rng, 2, min_distance=0.1, avoid=[block, zone], avoid_distance=0.12)
        layout = self._common(rng, color=colors[0], zone=colors[2])
        layout.update(
            colors=colors,
            block_positions=rounded((block, others[0])),
            zone_positions=rounded((zone, others[1])),
            yaws=[round(float(y), 5) for y in rng.uniform(-np.pi / 4, np.pi / 4, size=2)],
        )
        return layout

    def apply_layout(self, model, data, layout) -> None:
        for i in range(2):
            set_color(model, f"block{i}_geom", layout["colors"][i])
            x, y = layout["block_positions"][i]
            set_free_body(model, data, f"block{i}", [x, y, BLOCK_HALF], layout["yaws"][i])
            set_color(model, f"zone{i}_geom", layout["colors"][2 + i], alpha=0.9)
            model.body_pos[model.body(f"zone{i}").id][:2] = layout["zone_positions"][i]

    # the named block and square: 0 and 0 in every sampled layout, others in ``other_objectives``
    def named_points(self, model, data, layout) -> np.ndarray:
        return np.stack([body_position(data, f"block{layout.get('block', 0)}"),
                         body_position(data, f"zone{layout.get('zone', 0)}")])

    def other_objectives(self, layout: Layout) -> list[Layout]:
        return self._block_and_place_objectives(layout, "zone")

    def is_success(self, model, data, layout) -> bool:
        block = body_position(data, f"block{layout.get('block', 0)}")
        zone = np.asarray(layout["zone_positions"][layout.get("zone", 0)])
        return bool(np.linalg.norm(block[:2] - zone) < self.SUCCESS_DISTANCE and block[2] < self.MAX_HEIGHT)

    def push_spot(self, block_xy, zone_xy) -> np.ndarray:
        """Where the grip site pushes from: behind the block on the line from the target square."""
        direction = np.subtract(zone_xy, block_xy)
        direction = direction / max(float(np.linalg.norm(direction)), 1e-6)
        return np.array([*(np.asarray(block_xy) - direction * self.PUSH_STANDOFF), self.PUSH_HEIGHT])

    def stage_progress(self, model, data, layout) -> float:
        """reach (0.3): the grip site towards the push spot behind the target block;
        push (0.7): the block's xy distance to the target square, from its start distance down to
        ``SUCCESS_DISTANCE`` (only while the block is on the table: pushed, not carried)."""
        block = body_position(data, f"block{layout.get('block', 0)}")
        zone = np.asarray(layout["zone_positions"][layout.get("zone", 0)])
        start = layout["block_positions"][layout.get("block", 0)]
        reach = approach(data, layout, self.push_spot(block[:2], zone), self.push_spot(start, zone))
        start_gap = float(np.linalg.norm(np.subtract(start, zone))) - self.SUCCESS_DISTANCE
        push = closeness(float(np.linalg.norm(block[:2] - zone)) - self.SUCCESS_DISTANCE, start_gap)
        on_the_table = block[2] < self.MAX_HEIGHT
        return 0.3 * reach + 0.7 * push * on_the_table


def _tray_xml(name: str, inner_half: float, wall: float = 0.006, height: float = 0.025) -> str:
    outer = inner_half + wall
    walls = "".join(
        f'<geom name="{name}_wall{i}" type="box" pos="{x} {y} {height / 2}" size="{sx} {sy} {height / 2}" '
        f'rgba="1 1 1 1" contype="1" conaffinity="3"/>'
        for i, (x, y, sx, sy) in enumerate(
            [(outer - wall, 0, wall, outer), (-(outer - wall), 0, wall, outer), (0, outer - wall, outer, wall),
             (0, -(outer - wall), outer, wall)]
        )
    )
    return f"""
    <body name="{name}" pos="0 0 0">
      <geom name="{name}_geom" type="box" pos="0 0 0.003" size="{outer} {outer} 0.003" rgba="1 1 1 1"
            contype="1" conaffinity="3"/>
      {walls}
    </body>"""


class PickPlace(Task):
    """Put the named block into the named tray; another block and tray distract."""

    name = "PickPlace"
    max_steps = 120
    summary = "place the named block in the named tray and let go"
    templates = (
        "put the {color} block in the {tray} tray",
        "place the {color} cube into the {tray} tray",
        "pick up the {color} block and drop it in the {tray} tray",
    )
    TRAY_INNER_HALF = 0.06

    def objects_xml(self) -> str:
        return block_xml("block0") + block_xml("block1") + _tray_xml("tray0", self.TRAY_INNER_HALF) + _tray_xml(
            "tray1", self.TRAY_INNER_HALF
        )

    def sample_layout(self, rng: np.random.Generator) -> Layout:
        colors = pick_colors(rng, 4)  # block0, block1, tray0, tray1
        trays = sample_positions(rng, 2, min_distance=0.2)
        # Blocks must be clear of the trays' footprint, not just their centres.
        blocks = sample_positions(rng, 2, min_distance=0.1, avoid=trays, avoid_distance=0.14)
        layout = self._common(rng, color=colors[0], tray=colors[2])
        layout.update(
            colors=colors,
            block_positions=rounded(blocks),
            tray_positions=rounded(trays),
            yaws=[round(float(y), 5) for y in rng.uniform(-np.pi / 4, np.pi / 4, size=2)],
        )
        return layout

    def apply_layout(self, model, data, layout) -> None:
        for i in range(2):
            set_color(model, f"block{i}_geom", layout["colors"][i])
            x, y = layout["block_positions"][i]
            set_free_body(model, data, f"block{i}", [x, y, BLOCK_HALF], layout["yaws"][i])
            tray = model.body(f"tray{i}").id
            model.body_pos[tray][:2] = layout["tray_positions"][i]
            for geom in range(model.ngeom):
                if model.geom_bodyid[geom] == tray:
                    model.geom_rgba[geom] = (*[0.8 * c for c in COLORS[layout["colors"][2 + i]]], 1.0)

    # the named block and tray: 0 and 0 in every sampled layout, others in ``other_objectives``
    def named_points(self, model, data, layout) -> np.ndarray:
        return np.stack([body_position(data, f"block{layout.get('block', 0)}"),
                         body_position(data, f"tray{layout.get('tray', 0)}")])

    def other_objectives(self, layout: Layout) -> list[Layout]:
        return self._block_and_place_objectives(layout, "tray")

    def is_success(self, model, data, layout) -> bool:
        name = f"block{layout.get('block', 0)}"
        block = body_position(data, name)
        tray = np.asarray(layout["tray_positions"][layout.get("tray", 0)])
        inside = np.all(np.abs(block[:2] - tray) < self.TRAY_INNER_HALF)
        return bool(inside and block[2] < 0.045 and not gripper_touches(model, data, name))

    def stage_progress(self, model, data, layout) -> float:
        """Nested stages, the furthest one reached counts:
        - target block over the target tray's inside: touched 0.8, released 0.9 (success once it lies low);
        - else block held (both fingers touch it): 0.3 + lift (0.15: its bottom towards ``LIFTED`` above
          the table) + carry (0.35: its xy distance to the tray centre, from the start distance);
        - else reach (0.2): the grip site towards the block."""
        index = layout.get("block", 0)
        name, start = f"block{index}", layout["block_positions"][index]
        block, tray = body_position(data, name), np.asarray(layout["tray_positions"][layout.get("tray", 0)])
        if np.all(np.abs(block[:2] - tray) < self.TRAY_INNER_HALF):
            return 0.8 + 0.1 * (not gripper_touches(model, data, name))
        if gripper_holds(model, data, name):
            start_gap = float(np.linalg.norm(np.subtract(start, tray)))
            return 0.3 + 0.15 * lifted(block) + 0.35 * closeness(float(np.linalg.norm(block[:2] - tray)), start_gap)
        return 0.2 * approach(data, layout, block, on_table(start))


CABINET_HALF_DEPTH = 0.08
DRAWER_SLOT_HALF_WIDTH = 0.075
DRAWER_OFFSETS = (0.085, -0.085)  # y of each drawer's centre relative to the cabinet
DRAWER_TRAVEL = 0.14
HANDLE_STANDOFF = 0.045
HANDLE_Z = 0.055


def _cabinet_xml() -> str:
    d, h = CABINET_HALF_DEPTH, 0.08  # half depth (x), full height
    width = 2 * DRAWER_SLOT_HALF_WIDTH + 0.03
    shell = (
        f'<geom name="cab_back" type="box" pos="{d - 0.005} 0 {h / 2}" size="0.005 {width} {h / 2}" rgba="0.5 0.45 0.4 1"/>'
        f'<geom name="cab_top" type="box" pos="0 0 {h + 0.005}" size="{d} {width} 0.005" rgba="0.5 0.45 0.4 1"/>'
        f'<geom name="cab_left" type="box" pos="0 {width - 0.005} {h / 2}" size="{d} 0.005 {h / 2}" rgba="0.5 0.45 0.4 1"/>'
        f'<geom name="cab_right" type="box" pos="0 {-(width - 0.005)} {h / 2}" size="{d} 0.005 {h / 2}" rgba="0.5 0.45 0.4 1"/>'
        f'<geom name="cab_mid" type="box" pos="0 0 {h / 2}" size="{d} 0.005 {h / 2}" rgba="0.5 0.45 0.4 1"/>'
    )
    drawers = ""
    for i, y in enumerate(DRAWER_OFFSETS):
        w = DRAWER_SLOT_HALF_WIDTH - 0.004
        drawers += f"""
      <body name="drawer{i}" pos="0 {y} 0">
        <joint name="drawer{i}_slide" type="slide" axis="-1 0 0" range="0 {DRAWER_TRAVEL}" damping="4" frictionloss="0.3"/>
        <inertial pos="0 0 0.03" mass="0.3" diaginertia="0.002 0.002 0.002"/>
        <geom name="drawer{i}_front" type="box" pos="{-d + 0.006} 0 {h / 2}" size="0.006 {w} {h / 2 - 0.004}" rgba="0.75 0.7 0.62 1"/>
        <geom name="drawer{i}_bottom" type="box" pos="0 0 0.006" size="{d - 0.012} {w} 0.004" rgba="0.7 0.65 0.58 1"/>
        <geom name="drawer{i}_handle" type="box" pos="{-d - HANDLE_STANDOFF} 0 {HANDLE_Z}" size="0.008 0.04 0.008"
              rgba="1 1 1 1" friction="1.5 0.02 0.001" condim="4"/>
        <geom name="drawer{i}_post_a" type="box" pos="{-d - HANDLE_STANDOFF / 2} 0.034 {HANDLE_Z}" size="{HANDLE_STANDOFF / 2} 0.006 0.006" rgba="0.3 0.3 0.3 1"/>
        <geom name="drawer{i}_post_b" type="box" pos="{-d - HANDLE_STANDOFF / 2} -0.034 {HANDLE_Z}" size="{HANDLE_STANDOFF / 2} 0.006 0.006" rgba="0.3 0.3 0.3 1"/>
      </body>"""
    return f"""
    <body name="cabinet" pos="0.16 0 0">
      <geom name="cab_floor" type="box" pos="0 0 0.001" size="{d} {width} 0.001" rgba="0.5 0.45 0.4 1"/>
      {shell}
      {drawers}
    </body>"""


class OpenDrawer(Task):
    """Open the drawer whose handle has the named colour; the other drawer and a block distract."""

    name = "OpenDrawer"
    max_steps = 90
    summary = "pull open the drawer with the named handle colour"
    templates = (
        "open the {color} drawer",
        "pull open the drawer with the {color} handle",
        "open the drawer that has a {color} handle",
    )
    OPEN_DISTANCE = 0.08

    def objects_xml(self) -> str:
        return _cabinet_xml() + block_xml("block0")

    def sample_layout(self, rng: np.random.Generator) -> Layout:
        colors = pick_colors(rng, 3)  # target handle, other handle, block
        target = int(rng.integers(2))
        cabinet = [float(rng.uniform(0.12, 0.17)), float(rng.uniform(-0.06, 0.06))]
        block = np.array([rng.uniform(-0.18, -0.1), rng.uniform(-0.2, 0.2)])
        layout = self._common(rng, color=colors[0])
        handle_colors = [colors[0], colors[1]] if target == 0 else [colors[1], colors[0]]
        layout.update(
            handle_colors=handle_colors,
            target=target,
            cabinet_position=rounded([cabinet])[0],
            block_color=colors[2],
            block_position=rounded([block])[0],
            block_yaw=round(float(rng.uniform(-np.pi / 4, np.pi / 4)), 5),
        )
        return layout

    def apply_layout(self, model, data, layout) -> None:
        model.body_pos[model.body("cabinet").id][:2] = layout["cabinet_position"]
        for i in range(2):
            set_color(model, f"drawer{i}_handle", layout["handle_colors"][i])
            data.qpos[model.joint(f"drawer{i}_slide").qposadr[0]] = 0.0
        set_color(model, "block0_geom", layout["block_color"])
        x, y = layout["block_position"]
        set_free_body(model, data, "block0", [x, y, BLOCK_HALF], layout["block_yaw"])

    def named_points(self, model, data, layout) -> np.ndarray:
        handle = data.geom(f"drawer{layout['target']}_handle").xpos.copy()
        return np.stack([handle, handle])

    def other_objectives(self, layout: Layout) -> list[Layout]:
        other = 1 - layout["target"]
        return [self._renamed(layout, {"color": layout["handle_colors"][other]}, target=other)]

    def is_success(self, model, data, layout) -> bool:
        opening = data.qpos[model.joint(f"drawer{layout['target']}_slide").qposadr[0]]
        return bool(opening > self.OPEN_DISTANCE)

    def stage_progress(self, model, data, layout) -> float:
        """reach (0.25): the grip site towards the target drawer's handle; grasp (0.1): both fingers
        touch that drawer (its handle bar); open (0.65): its opening towards ``OPEN_DISTANCE``."""
        target = layout["target"]
        cabinet_x, cabinet_y = layout["cabinet_position"]
        handle_start = [cabinet_x - CABINET_HALF_DEPTH - HANDLE_STANDOFF, cabinet_y + DRAWER_OFFSETS[target], HANDLE_Z]
        reach = approach(data, layout, data.geom(f"drawer{target}_handle").xpos, handle_start)
        grasped = gripper_holds(model, data, f"drawer{target}")
        opening = data.qpos[model.joint(f"drawer{target}_slide").qposadr[0]]
        return 0.25 * reach + 0.1 * grasped + 0.65 * float(np.clip(opening / self.OPEN_DISTANCE, 0.0, 1.0))


BUTTON_TRAVEL = 0.012
BUTTON_CAP_Z = 0.034  # height of a released button cap's centre


def _button_xml(name: str) -> str:
    return f"""
    <body name="{name}" pos="0 0 0">
      <geom name="{name}_base" type="box" pos="0 0 0.012" size="0.04 0.04 0.012" rgba="0.25 0.25 0.25 1"/>
      <body name="{name}_cap" pos="0 0 {BUTTON_CAP_Z}">
        <joint name="{name}_press" type="slide" axis="0 0 -1" range="0 {BUTTON_TRAVEL}" stiffness="120"
               springref="-0.002" damping="2"/>
        <geom name="{name}_cap_geom" type="box" size="0.026 0.026 0.01" mass="0.02" rgba="1 1 1 1"
              contype="1" conaffinity="3"/>
      </body>
    </body>"""


class PressButton(Task):
    """Press the button with the named colour among three."""

    name = "PressButton"
    max_steps = 50
    summary = "press down the button of the named colour"
    templates = ("press the {color} button", "push down the {color} button", "hit the {color} button")
    PRESSED_DEPTH = 0.008

    def objects_xml(self) -> str:
        return "".join(_button_xml(f"button{i}") for i in range(3))

    def sample_layout(self, rng: np.random.Generator) -> Layout:
        colors = pick_colors(rng, 3)
        positions = sample_positions(rng, 3, min_distance=0.12)
        layout = self._common(rng, color=colors[0])
        layout.update(colors=colors, positions=rounded(positions), target=0)
        return layout

    def apply_layout(self, model, data, layout) -> None:
        for i in range(3):
            model.body_pos[model.body(f"button{i}").id][:2] = layout["positions"][i]
            set_color(model, f"button{i}_cap_geom", layout["colors"][i])
            data.qpos[model.joint(f"button{i}_press").qposadr[0]] = 0.0

    def named_points(self, model, data, layout) -> np.ndarray:
        cap = body_position(data, f"button{layout['target']}_cap")
        return np.stack([cap, cap])

    def other_objectives(self, layout: Layout) -> list[Layout]:
        return [self._renamed(layout, {"color": layout["colors"][i]}, target=i) for i in range(3) if i != layout["target"]]

    def is_success(self, model, data, layout) -> bool:
        depth = data.qpos[model.joint(f"button{layout['target']}_press").qposadr[0]]
        return bool(depth > self.PRESSED_DEPTH)

    def stage_progress(self, model, data, layout) -> float:
        """reach (0.5): the grip site towards the target button's cap; press (0.5): the cap's depth
        towards ``PRESSED_DEPTH``."""
        target = layout["target"]
        x, y = layout["positions"][target]
        reach = approach(data, layout, body_position(data, f"button{target}_cap"), [x, y, BUTTON_CAP_Z])
        depth = data.qpos[model.joint(f"button{target}_press").qposadr[0]]
        return 0.5 * reach + 0.5 * float(np.clip(depth / self.PRESSED_DEPTH, 0.0, 1.0))


TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (Reach, Lift, Push, PickPlace, Stack, OpenDrawer, PressButton)
}


def get_task(name: str) -> Task:
    """Instantiate a task by name; the error lists the valid names."""
    try:
        return TASKS[name]()
    except KeyError:
        raise KeyError(f"unknown tabletop task {name!r}; valid tasks: {', '.join(TASKS)}") from None
