"""How faithful is the world model? Measured on held-out trajectories the model never trained on.

- **Open-loop fidelity**: from each trajectory's real first frame, the model imagines the whole
  episode from the recorded actions alone (its own frames are its context). PSNR and SSIM of the
  imagined frame at horizon h against the real frame h, next to the "nothing moves" baseline (the
  first frame copied).
- **Outcome agreement**: the reward critic judges the imagined episode (success when its done
  probability reaches ``done_threshold`` at some step, as ``WorldModelVecEnv`` terminates) and that
  verdict is compared with what truly happened in the simulator. The critic's verdict on the real
  frames is reported beside it, which separates the critic's errors from the world model's.
- **Calibrated threshold** (optional): the threshold at which the critic's verdicts on imagined
  *training* rollouts agree best with the simulator (``calibrate_done_threshold``), for the evaluation
  and for ``WorldModelVecEnv`` (``env.done_threshold``).
- **Videos**: real | imagined side by side, and a PNG of both at every evaluated horizon.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from vla_rl.core.atomic_file import write_text_atomic
from vla_rl.core.stats import wilson_interval
from vla_rl.core.types import EpisodeFrames, ObsBatch

from world_model.data import Trajectory, executed_actions
from world_model.train import psnr


def ssim(predicted: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Gaussian window 11, sigma 1.5, per channel, then averaged) of uint8
    ``[N, H, W, C]`` images."""
    x = torch.from_numpy(predicted).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(real).permute(0, 3, 1, 2).double()
    channels = x.shape[1]
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-coords ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(channels, 1, 11, 11).contiguous()

    def blur(image):
        return F.conv2d(image, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return index.mean(dim=(1, 2, 3)).numpy()


@torch.no_grad()
def imagine_open_loop(model, trajectories: Sequence[Trajectory], sampling_steps: int | None = None,
                      seed: int = 0, batch_size: int = 64, show_progress: bool = True) -> list[np.ndarray]:
    """Imagined frames ``uint8 [T + 1, H, W, C]`` of each trajectory (frame 0 is the real one)."""
    return imagine_open_loop_with_proprio(model, trajectories, sampling_steps, seed, batch_size, show_progress)[0]


def imagine_open_loop_with_proprio(model, trajectories: Sequence[Trajectory], sampling_steps: int | None = None,
                                   seed: int = 0, batch_size: int = 64,
                                   show_progress: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Imagined frames ``uint8 [T + 1, H, W, C]`` and proprio states ``float32 [T + 1, P]`` of each
    trajectory, open loop from its first real frame and proprio with its recorded actions. Chunks of
    ``batch_size`` share one generator: an episode's sampling noise depends on the seed and on the
    episodes imagined with it and before it (their order and count), not on the seed alone."""
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(seed)
    frames_out: list[np.ndarray] = []
    proprio_out: list[np.ndarray] = []
    total = sum(len(t.actions) for t in trajectories)
    with tqdm(total=total, desc="imagining", unit="step", disable=not show_progress) as bar:
        for start in range(0, len(trajectories), batch_size):
            chunk = trajectories[start:start + batch_size]
            obs = ObsBatch(images=_split_cameras(model, np.stack([t.frames[0] for t in chunk])),
                           proprio=np.stack([t.proprio[0] for t in chunk]).astype(np.float32),
                           instructions=[t.instruction for t in chunk])
            state = model.init_state(obs)
            frames = [[t.frames[0]] for t in chunk]
            proprio = [[np.asarray(t.proprio[0], np.float32)] for t in chunk]
            longest = max(len(t.actions) for t in chunk)
            for step in range(longest):
                # a finished trajectory repeats its last action; its extra frames are discarded
                actions = executed_actions(np.stack([t.actions[min(step, len(t.actions) - 1)] for t in chunk]))
                state, predicted = model.predict(state, actions, steps=sampling_steps, generator=generator)
                stacked = model.stack_cameras(predicted).numpy()
                for i, t in enumerate(chunk):
                    if step < len(t.actions):
                        frames[i].append(stacked[i])
                        proprio[i].append(np.asarray(predicted.proprio[i], np.float32))
                bar.update(sum(step < len(t.actions) for t in chunk))
            frames_out += [np.stack(f) for f in frames]
            proprio_out += [np.stack(p) for p in proprio]
    return frames_out, proprio_out


def _split_cameras(model, frames: np.ndarray) -> dict[str, np.ndarray]:
    return {c: np.ascontiguousarray(frames[..., 3 * i:3 * i + 3]) for i, c in enumerate(model.config.cameras)}


def fidelity(trajectories: Sequence[Trajectory], imagined: Sequence[np.ndarray], horizons: Sequence[int]) -> dict:
    """PSNR / SSIM per horizon over the trajectories long enough for it, with the copy-first-frame baseline."""
    rows = {}
    for h in horizons:
        pairs = [(t.frames[h], im[h]) for t, im in zip(trajectories, imagined) if len(t.frames) > h]
        if not pairs:
            continue
        real = np.stack([p[0] for p in pairs])
        predicted = np.stack([p[1] for p in pairs])
        first = np.stack([t.frames[0] for t in trajectories if len(t.frames) > h])
        rows[str(h)] = {"episodes": len(pairs), "psnr": float(psnr(predicted, real).mean()),
                        "ssim": float(ssim(predicted, real).mean()),
                        "copy_first_frame_psnr": float(psnr(first, real).mean()),
                        "copy_first_frame_ssim": float(ssim(first, real).mean())}
    return rows


def proprio_drift(trajectories: Sequence[Trajectory], imagined_proprio: Sequence[np.ndarray],
                  horizons: Sequence[int]) -> dict:
    """How far the imagined end-effector position (proprio[:3], metres) is from the real one: median and
    90th percentile at each horizon and at each episode's last step, and the last step's median per
    behaviour. The policy reads the proprio (its gripper point), so this drift is what it acts on."""
    def errors(step_of) -> np.ndarray:
        return np.array([np.linalg.norm(p[step_of(t)][:3] - t.proprio[step_of(t)][:3])
                         for t, p in zip(trajectories, imagined_proprio) if step_of(t) is not None])

    def summary(values: np.ndarray) -> dict:
        return {"episodes": len(values), "median_m": float(np.median(values)), "p90_m": float(np.percentile(values, 90))}

    rows = {h: summary(e) for h in horizons
            if len(e := errors(lambda t, h=h: h if len(t.proprio) > h else None))}
    last = errors(lambda t: len(t.proprio) - 1)
    behaviours = np.array([t.behaviour for t in trajectories])
    return {"ee_position_error_by_horizon": rows, "ee_position_error_last_step": summary(last),
            "ee_position_error_last_step_median_m_by_behaviour": {
                b: float(np.median(last[behaviours == b])) for b in sorted(set(behaviours))}}


def agreement_over_samples(per_sample: Sequence[dict], seeds: Sequence[int]) -> dict:
    """The outcome agreement of several imagination seeds of the same action sequences: how much of
    a single figure is the sampling noise of the world model."""
    values = np.array([row["agreement"] for row in per_sample])
    return {"seeds": list(seeds), "agreement": values.tolist(), "mean": float(values.mean()),
            "min": float(values.min()), "max": float(values.max()),
            "agreement_on_failures": [row["agreement_on_failures"] for row in per_sample],
            "imagined_vs_real_verdict_agreement": [row["imagined_vs_real_verdict_agreement"] for row in per_sample]}


def critic_done_traces(critic, episodes: Sequence[np.ndarray], instructions: Sequence[str], camera_channels: slice,
                       wrist_channels: slice | None = None) -> np.ndarray:
    """The critic's done probability ``[N, T]`` of every frame after the first (frame 0 is the reset frame),
    NaN past an episode's end (channel-stacked cameras: the agent view at ``camera_channels``, the wrist
    camera at ``wrist_channels`` for a critic that reads it)."""
    longest = max(len(e) for e in episodes)
    frames = np.zeros((len(episodes), longest, *episodes[0].shape[1:3], 3), np.uint8)
    wrist = np.zeros_like(frames) if wrist_channels is not None else None
    mask = np.zeros((len(episodes), longest), bool)
    for i, episode in enumerate(episodes):
        frames[i, :len(episode)] = episode[..., camera_channels]
        if wrist is not None:
            wrist[i, :len(episode)] = episode[..., wrist_channels]
        mask[i, :len(episode)] = True
    scored = critic.score(EpisodeFrames(frames=frames, instructions=list(instructions), mask=mask, wrist_frames=wrist))
    return np.where(mask, scored.done_prob, np.nan)[:, 1:]


def critic_verdicts(critic, episodes: Sequence[np.ndarray], instructions: Sequence[str], camera_channels: slice,
                    done_threshold: float, wrist_channels: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(success verdict ``bool [N]``, max done probability ``[N]``) of the critic on each episode's frames
    (see ``critic_done_traces``)."""
    traces = critic_done_traces(critic, episodes, instructions, camera_channels, wrist_channels)
    peak = np.nan_to_num(traces, nan=0.0).max(axis=1)
    return peak >= done_threshold, peak


def critic_channels(critic, cameras: Sequence[str]) -> tuple[slice, slice | None]:
    """Where the critic's agent view and, for a critic that reads it, its wrist camera sit among the
    channels of the world model's ``cameras``; a clear error when the model lacks either (another camera
    is never handed to the critic as its agent view, as ``WorldModelVecEnv`` refuses such a model too)."""
    def channels(camera: str) -> slice:
        index = list(cameras).index(camera)
        return slice(3 * index, 3 * index + 3)

    if "agentview" not in cameras:
        raise ValueError(f"the critic reads the agent view; the world model predicts only {list(cameras)} "
                         "(train one whose cameras include agentview)")
    wrist = None
    if getattr(critic, "reads_wrist", False):
        if "wrist" not in cameras:
            raise ValueError(f"the critic reads the wrist camera; the world model predicts only {list(cameras)}")
        wrist = channels("wrist")
    return channels("agentview"), wrist


def outcome_agreement(critic, trajectories: Sequence[Trajectory], imagined: Sequence[np.ndarray],
                      done_threshold: float, cameras: Sequence[str] = ("agentview",)) -> dict:
    """The critic's success verdicts on imagined and on real frames against the simulator's outcomes
    (``cameras``: the world model's, in channel order)."""
    agent, wrist = critic_channels(critic, cameras)
    instructions = [t.instruction for t in trajectories]
    truth = np.array([t.succeeded for t in trajectories])
    on_imagined, peak_imagined = critic_verdicts(critic, imagined, instructions, agent, done_threshold, wrist)
    on_real, peak_real = critic_verdicts(critic, [t.frames for t in trajectories], instructions, agent,
                                         done_threshold, wrist)
    behaviours = np.array([t.behaviour for t in trajectories])

    def rate(mask: np.ndarray, verdict: np.ndarray) -> float | None:
        return float((verdict[mask] == truth[mask]).mean()) if mask.any() else None

    everything = np.ones(len(truth), bool)
    return {"episodes": len(truth), "true_successes": int(truth.sum()), "done_threshold": done_threshold,
            "agreement": rate(everything, on_imagined),
            # a 100-episode held-out set pins the agreement to about +-8 points: say so beside the figure
            "agreement_interval": list(wilson_interval(int((on_imagined == truth).sum()), len(truth))),
            "agreement_on_successes": rate(truth, on_imagined),
            "agreement_on_failures": rate(~truth, on_imagined),
            "critic_on_real_frames_agreement": rate(everything, on_real),
            # how faithfully the world model reproduces what the critic sees, whatever the truth
            "imagined_vs_real_verdict_agreement": float((on_imagined == on_real).mean()),
            # GRPO rolls out the policy: its near misses are judged differently from experts' clear successes
            "agreement_by_behaviour": {behaviour: rate(behaviours == behaviour, on_imagined)
                                       for behaviour in sorted(set(behaviours))},
            # imagined frames that look further along than the real ones (session 30: the SFT policy's long
            # failed rollouts) show here as imagined > real
            "mean_peak_done_prob_by_behaviour": {
                behaviour: {"real": float(peak_real[behaviours == behaviour].mean()),
                            "imagined": float(peak_imagined[behaviours == behaviour].mean())}
                for behaviour in sorted(set(behaviours))},
            "imagined_peak_done_prob": peak_imagined.round(3).tolist()}


# done thresholds tried when calibrating a verdict rule on training episodes
DONE_THRESHOLD_GRID = tuple(round(float(x), 2) for x in np.arange(0.05, 0.951, 0.05))


def agreement_by_threshold(scores: np.ndarray, truth: np.ndarray) -> dict[float, float]:
    """For each threshold of ``DONE_THRESHOLD_GRID``: the share of episodes whose verdict (score reaches the
    threshold) matches the simulator's outcome ``truth``."""
    return {threshold: float(((scores >= threshold) == truth).mean()) for threshold in DONE_THRESHOLD_GRID}


def best_threshold(agreement: dict[float, float]) -> float:
    """The threshold of ``agreement_by_threshold`` that agrees most often; ties go to the one nearest 0.5."""
    return max(agreement, key=lambda threshold: (agreement[threshold], -abs(threshold - 0.5)))


def calibrate_done_threshold(model, critic, trajectories: Sequence[Trajectory], sampling_steps: int | None = None,
                             seed: int = 0, show_progress: bool = True) -> dict:
    """The done-probability threshold at which the critic's verdicts on *imagined* rollouts of
    ``trajectories`` (training episodes, never the held-out ones) agree most often with what happened in
    the simulator, from a grid of 0.05 to 0.95 (ties go to the threshold nearest 0.5).

    Why: the critic is calibrated on real frames, and imagined frames are blurrier near contact, so
    its done probability on an imagined success rarely reaches what it gives the real one."""
    if not trajectories:
        raise ValueError("no trajectories to calibrate the done threshold on")
    agent, wrist = critic_channels(critic, model.config.cameras)
    imagined = imagine_open_loop(model, trajectories, sampling_steps, seed, show_progress=show_progress)
    _, peak = critic_verdicts(critic, imagined, [t.instruction for t in trajectories], agent, 0.5, wrist)
    truth = np.array([t.succeeded for t in trajectories])
    agreement = agreement_by_threshold(peak, truth)
    best = best_threshold(agreement)
    # A threshold at the grid's edge means the best rule may lie beyond it; a verdict no better than
    # calling every episode the majority outcome carries no information about the episode.
    return {"done_threshold": best, "agreement": agreement[best], "episodes": len(trajectories),
            "true_successes": int(truth.sum()), "agreement_by_threshold": agreement,
            "at_grid_edge": best in (DONE_THRESHOLD_GRID[0], DONE_THRESHOLD_GRID[-1]),
            "majority_outcome_agreement": float(max(truth.mean(), 1.0 - truth.mean()))}


def _cameras_stacked(frames: np.ndarray) -> np.ndarray:
    """Channel-stacked cameras ``[T, H, W, 3 * C]`` -> one image per frame with the cameras one above the
    other ``[T, C * H, W, 3]``."""
    return np.concatenate([frames[..., c:c + 3] for c in range(0, frames.shape[-1], 3)], axis=1)


# the names write_videos gives its MP4s: <episode index>_<task>_<behaviour>_<outcome>.mp4
VIDEO_NAME = re.compile(r"\d{3,}_.+_(success|failure)\.mp4")


def write_videos(trajectories: Sequence[Trajectory], imagined: Sequence[np.ndarray], out: Path, count: int,
                 fps: int = 10, scale: int = 4) -> list[str]:
    """Side-by-side MP4s (real | imagined; each camera of the world model one above the other) of
    successes and failures alike, upscaled ``scale`` x. The videos an earlier evaluation wrote to ``out``
    are removed first (only files named as this function names them), so the directory shows this
    evaluation's alone, whatever their episodes or number."""
    import imageio.v3 as iio

    out.mkdir(parents=True, exist_ok=True)
    for earlier in out.iterdir():
        if earlier.is_file() and VIDEO_NAME.fullmatch(earlier.name):
            earlier.unlink()
    successes = [i for i, t in enumerate(trajectories) if t.succeeded]
    failures = [i for i, t in enumerate(trajectories) if not t.succeeded]
    interleaved = [i for pair in zip(successes, failures) for i in pair]
    order = (interleaved + successes[len(interleaved) // 2:] + failures[len(interleaved) // 2:])[:count]
    paths = []
    for i in order:
        t = trajectories[i]
        real, dreamt = _cameras_stacked(t.frames), _cameras_stacked(imagined[i])
        # a 4-pixel white gap keeps the upscaled width a multiple of 16 (what H.264 encoders want)
        both = np.concatenate([real, np.full_like(real[..., :4, :], 255), dreamt], axis=2)
        both = both.repeat(scale, axis=1).repeat(scale, axis=2)
        outcome = "success" if t.succeeded else "failure"
        path = out / f"{i:03d}_{t.task}_{t.behaviour}_{outcome}.mp4"
        iio.imwrite(path, both, fps=fps, codec="libx264")
        paths.append(str(path))
    return paths


def write_horizon_strip(trajectories: Sequence[Trajectory], imagined: Sequence[np.ndarray],
                        horizons: Sequence[int], path: Path, episodes: int = 4) -> Path | None:
    """Real and imagined frames of up to ``episodes`` episodes at t = 0 and each horizon. Horizons that
    no episode reaches are left out (the strip shows those of the longest episodes); None when not even
    the shortest horizon fits: no strip, and an earlier evaluation's at ``path`` is removed so that it is
    not taken for this one's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max(len(t.frames) for t in trajectories)
    shown = [h for h in horizons if h < longest]
    if not shown:
        Path(path).unlink(missing_ok=True)
        return None
    chosen = [i for i, t in enumerate(trajectories) if len(t.frames) > max(shown)][:episodes]
    steps = [0, *shown]
    figure, axes = plt.subplots(2 * len(chosen), len(steps), figsize=(1.6 * len(steps), 3.3 * len(chosen)),
                                squeeze=False)
    for row, i in enumerate(chosen):
        for col, h in enumerate(steps):
            for k, (frames, label) in enumerate(((trajectories[i].frames, "real"), (imagined[i], "imagined"))):
                ax = axes[2 * row + k, col]
                ax.imshow(frames[h][..., :3])
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(f"{label}\n{trajectories[i].task}", fontsize=7)
                if row == 0 and k == 0:
                    ax.set_title(f"t = {h}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def evaluate_world_model(model, trajectories: Sequence[Trajectory], out: Path, critic=None,
                         horizons: Sequence[int] = (1, 8, 16), videos: int = 6, sampling_steps: int = 0,
                         done_threshold: float = 0.5, seed: int = 0, show_progress: bool = True,
                         extra: dict | None = None, samples: int = 1) -> dict:
    """The report (also written to ``out/eval.json``) with fidelity, agreement and files; ``extra``
    (e.g. software versions) is recorded in it. ``samples`` > 1 imagines the episodes again with seeds
    ``seed + 1, ...`` and reports the agreement of each (fidelity and videos stay the first seed's)."""
    if not trajectories:
        raise ValueError("no held-out trajectories to evaluate the world model on")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if critic is not None:
        critic_channels(critic, model.config.cameras)  # a mismatch fails before minutes of imagination
    started = time.perf_counter()
    imagined, imagined_proprio = imagine_open_loop_with_proprio(model, trajectories, sampling_steps or None, seed,
                                                                show_progress=show_progress)
    seconds = time.perf_counter() - started
    steps = sum(len(t.actions) for t in trajectories)
    report = {
        "episodes": len(trajectories), "sampling_steps": sampling_steps or model.config.sampling_steps,
        "seed": seed, "init_state_ids": [t.init_state_id for t in trajectories],
        "behaviours": sorted({t.behaviour for t in trajectories}), "tasks": sorted({t.task for t in trajectories}),
        "imagined_steps_per_second": steps / seconds, "fidelity": fidelity(trajectories, imagined, horizons),
        "proprio_drift": proprio_drift(trajectories, imagined_proprio, horizons),
        **(extra or {}),
    }
    if critic is not None:
        report["outcome_agreement"] = outcome_agreement(critic, trajectories, imagined, done_threshold,
                                                        model.config.cameras)
        if samples > 1:
            seeds = [seed + k for k in range(samples)]
            per_sample = [report["outcome_agreement"]] + [
                outcome_agreement(critic, trajectories, imagine_open_loop(model, trajectories, sampling_steps or None,
                                                                          extra_seed, show_progress=show_progress),
                                  done_threshold, model.config.cameras)
                for extra_seed in seeds[1:]]
            report["outcome_agreement_over_samples"] = agreement_over_samples(per_sample, seeds)
    # the numbers are saved before the videos and the strip, so a failure in writing those loses no work;
    # the file is written again with their paths
    write_report(report, out)
    report["videos"] = write_videos(trajectories, imagined, out / "videos", videos)
    strip = write_horizon_strip(trajectories, imagined, horizons, out / "horizons.png")
    report["horizon_strip"] = None if strip is None else str(strip)
    write_report(report, out)
    return report


def write_report(report: dict, out: Path) -> Path:
    """``out/eval.json``, replaced atomically (a reader never sees half of it)."""
    return write_text_atomic(Path(out) / "eval.json", json.dumps(report, indent=1) + "\n")


def print_report(report: dict) -> None:
    print(f"{'horizon':>8} {'episodes':>9} {'PSNR':>7} {'SSIM':>6} {'copy-first PSNR':>16} {'copy-first SSIM':>16}")
    for h, row in report["fidelity"].items():
        print(f"{h:>8} {row['episodes']:>9} {row['psnr']:>7.2f} {row['ssim']:>6.3f} {row['copy_first_frame_psnr']:>16.2f} "
              f"{row['copy_first_frame_ssim']:>16.3f}")
    agreement = report.get("outcome_agreement")
    if agreement:
        def pct(value):
            return "n/a" if value is None else f"{value:.1%}"

        print(f"\noutcome agreement (critic on imagined vs simulator), {agreement['episodes']} episodes "
              f"({agreement['true_successes']} true successes): {pct(agreement['agreement'])} "
              f"(95% CI {pct(agreement['agreement_interval'][0])}-{pct(agreement['agreement_interval'][1])}) "
              f"[successes {pct(agreement['agreement_on_successes'])}, failures {pct(agreement['agreement_on_failures'])}]"
              f"; critic on the real frames: {pct(agreement['critic_on_real_frames_agreement'])}; "
              f"critic's verdict imagined vs real frames: {pct(agreement['imagined_vs_real_verdict_agreement'])}")
        by_behaviour = agreement.get("agreement_by_behaviour") or {}
        if len(by_behaviour) > 1:
            print("agreement by behaviour: " + ", ".join(f"{name or 'unlabelled'} {pct(value)}"
                                                       for name, value in by_behaviour.items()))
            print("mean peak done probability, real -> imagined frames: " + ", ".join(
                f"{name or 'unlabelled'} {row['real']:.2f} -> {row['imagined']:.2f}"
                for name, row in agreement["mean_peak_done_prob_by_behaviour"].items()))
    over_samples = report.get("outcome_agreement_over_samples")
    if over_samples:
        print(f"agreement over {len(over_samples['seeds'])} imagination seeds: mean {over_samples['mean']:.1%} "
              f"(min {over_samples['min']:.1%}, max {over_samples['max']:.1%}): "
              + ", ".join(f"{value:.1%}" for value in over_samples["agreement"]))
    drift = report.get("proprio_drift")
    if drift:
        last = drift["ee_position_error_last_step"]
        print(f"imagined end-effector position vs real (the proprio the policy reads), last step: median "
              f"{100 * last['median_m']:.1f} cm, p90 {100 * last['p90_m']:.1f} cm; by behaviour: " + ", ".join(
                  f"{name or 'unlabelled'} {100 * value:.1f} cm"
                  for name, value in drift["ee_position_error_last_step_median_m_by_behaviour"].items()))


__all__ = ["ssim", "imagine_open_loop", "imagine_open_loop_with_proprio", "proprio_drift", "agreement_over_samples",
           "calibrate_done_threshold", "fidelity", "outcome_agreement", "critic_verdicts", "write_videos",
           "evaluate_world_model", "print_report"]
