"""``WorldModelVecEnv``: the learned video model behind the ``VecEnv`` contract, so the rollout
collector, the GRPO trainer and the evaluation use it exactly like a simulator.

- **reset** asks a real env (``reset_env``, e.g. the MuJoCo tabletop ``SimVecEnv``) for the initial
  observations of the requested init states: imagination starts from real frames.
- **step** predicts the next frame and proprio of every running rollout in one batch, from the actions
  clipped to [-1, 1] as the simulator clips them before the arm executes them.
- **reward and termination** come from the reward critic passed in (``RewardCritic.score`` on the
  pair (first frame, current frame)): the episode terminates as a success when the critic's done
  probability reaches ``done_threshold`` (reward 1 on that step, as the simulator's success
  reward), and is truncated at the task's step limit. ``info`` carries the critic's value and done
  probability of every step. A critic that reads the wrist camera (``wrist_view``) gets the
  imagined wrist frames too, so the world model must predict that camera.

Sampling noise: one generator (``seed``) serves the whole env and each step draws noise for the
running rollouts only, so a rollout's imagined frames depend on which others are still running, not
on the seed alone (``VideoWorldModel.sample_next``).

Autoreset is off, as in every ``VecEnv``: a finished rollout is no longer predicted and keeps
returning its last observation with zero reward and its final flags (terminated, truncated and
success), as ``SimVecEnv`` does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from vla_rl.core.types import EnvSpec, EpisodeFrames, ObsBatch, StepResult, TaskSpec

from world_model.data import executed_actions


class WorldModelVecEnv:
    def __init__(self, model, critic, reset_env, step_limit: Callable[[str], int], done_threshold: float = 0.5,
                 sampling_steps: int | None = None, critic_camera: str = "agentview", seed: int = 0):
        if not 0 < done_threshold < 1:
            raise ValueError(f"done_threshold must be in (0, 1), got {done_threshold}")
        if critic_camera not in model.config.cameras:
            raise ValueError(f"the critic's camera {critic_camera!r} is not one the world model predicts "
                             f"({list(model.config.cameras)})")
        self.critic_wrist = bool(getattr(critic, "reads_wrist", False))
        if self.critic_wrist and "wrist" not in model.config.cameras:
            raise ValueError(f"the critic reads the wrist camera; the world model predicts only "
                             f"{list(model.config.cameras)} (train one with cameras [agentview, wrist])")
        real = reset_env.spec
        if real.image_size != model.config.image_size:
            raise ValueError(f"the reset env renders {real.image_size} px, the world model predicts "
                             f"{model.config.image_size} px")
        self.model = model.eval()
        self.critic = critic
        self.reset_env = reset_env
        self.step_limit = step_limit
        self.done_threshold = done_threshold
        self.sampling_steps = sampling_steps
        self.critic_camera = critic_camera
        self.generator = torch.Generator().manual_seed(seed)
        self.spec = EnvSpec(num_envs=real.num_envs, cameras=tuple(model.config.cameras),
                            image_size=model.config.image_size, proprio_dim=real.proprio_dim,
                            action_dim=real.action_dim, control_hz=real.control_hz,
                            max_episode_steps=real.max_episode_steps)
        self.state = None

    def reset(self, tasks: Sequence[TaskSpec]) -> ObsBatch:
        obs = self.reset_env.reset(tasks)
        # copies: the real env may hand out views of its shared memory, and these arrays are overwritten
        obs = ObsBatch(images={c: obs.images[c].copy() for c in self.model.config.cameras},
                       proprio=obs.proprio.copy(), instructions=list(obs.instructions))
        self.state = self.model.init_state(obs)
        self.obs = obs
        self.first_frames = obs.images[self.critic_camera].copy()
        self.first_wrist = obs.images["wrist"].copy() if self.critic_wrist else None
        self.limits = np.array([self.step_limit(t.task) for t in tasks])
        self.elapsed = np.zeros(len(tasks), int)
        self.terminated = np.zeros(len(tasks), bool)
        self.truncated = np.zeros(len(tasks), bool)
        self.succeeded = np.zeros(len(tasks), bool)
        return self._snapshot()

    def _snapshot(self) -> ObsBatch:
        obs = self.obs
        return ObsBatch(images={c: v.copy() for c, v in obs.images.items()}, proprio=obs.proprio.copy(),
                        instructions=list(obs.instructions))

    def step(self, actions: np.ndarray) -> StepResult:
        if self.state is None:
            raise RuntimeError("step() called before reset()")
        actions = np.asarray(actions, np.float32)
        count = self.spec.num_envs
        if actions.shape != (count, self.spec.action_dim):
            raise ValueError(f"actions must be [{count}, {self.spec.action_dim}], got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            bad = sorted(set(np.nonzero(~np.isfinite(actions))[0].tolist()))
            raise ValueError(f"actions contain NaN or inf for envs {bad}; no env was stepped")
        actions = executed_actions(actions)  # as the simulator clips them: the imagined arm goes as far as the real
        running = np.nonzero(~(self.terminated | self.truncated))[0]
        reward = np.zeros(count, np.float32)
        info = [{} for _ in range(count)]
        success_now = np.zeros(count, bool)
        if len(running):
            self._imagine(running, actions[running])
            value, done_prob = self._judge(running)
            self.elapsed[running] += 1
            success_now[running] = done_prob >= self.done_threshold
            reward[running] = success_now[running].astype(np.float32)
            self.terminated |= success_now
            self.succeeded |= success_now
            self.truncated[running] |= (self.elapsed[running] >= self.limits[running]) & ~success_now[running]
            for i, slot in enumerate(running):
                info[slot] = {"critic_value": float(value[i]), "critic_done_prob": float(done_prob[i])}
        # a finished rollout repeats its final flags, success included, as SimVecEnv's slots do
        return StepResult(obs=self._snapshot(), reward=reward, terminated=self.terminated.copy(),
                          truncated=self.truncated.copy(), success=self.succeeded.copy(), info=info)

    def _imagine(self, rows: np.ndarray, actions: np.ndarray) -> None:
        """Advance the rollouts ``rows`` by one predicted step (the others keep their state)."""
        index = torch.from_numpy(rows)
        state = self.state
        sub = type(state)(state.context[index], state.proprio[index], state.previous_proprio[index],
                          [state.instructions[i] for i in rows])
        sub, obs = self.model.predict(sub, actions, steps=self.sampling_steps, generator=self.generator)
        state.context[index] = sub.context
        state.proprio[index] = sub.proprio
        state.previous_proprio[index] = sub.previous_proprio
        for camera, image in obs.images.items():
            self.obs.images[camera][rows] = image
        self.obs.proprio[rows] = obs.proprio

    def _judge(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The critic's value and done probability of the current frames of ``rows``."""
        frames = np.stack([self.first_frames[rows], self.obs.images[self.critic_camera][rows]], axis=1)
        wrist = np.stack([self.first_wrist[rows], self.obs.images["wrist"][rows]], axis=1) if self.critic_wrist else None
        scored = self.critic.score(EpisodeFrames(frames=frames, instructions=[self.obs.instructions[i] for i in rows],
                                                 mask=np.ones((len(rows), 2), bool), wrist_frames=wrist))
        return scored.progress[:, 1], scored.done_prob[:, 1]

    def close(self) -> None:
        self.reset_env.close()


__all__ = ["WorldModelVecEnv"]
