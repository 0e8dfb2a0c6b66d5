"""`vla-rl eval` when things go wrong (a dying env worker, Ctrl-C, a corrupt newest checkpoint, an output
path that cannot be written) and what its report holds. The crash and Ctrl-C tests run the command in a
subprocess with env worker processes, as a user does."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.train.test_trainer import tiny_checkpoint  # noqa: F401  (module fixture)
from vla_rl.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _sigint_as_in_a_terminal() -> None:
    """A job started in the background by a non-interactive shell (nohup, CI wrappers) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler: Ctrl-C's default is restored for the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class EvalProcess:
    """``vla-rl eval ARGS`` in a subprocess (its own session, as a terminal's foreground job), its stderr
    read as it comes (tqdm redraws with carriage returns, not lines)."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vla_rl.cli.main", "eval", *args], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
            preexec_fn=_sigint_as_in_a_terminal)
        self.out, self.err = [], []
        self._readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list) -> None:
        while chunk := stream.read(1):
            into.append(chunk)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def episodes_done(self) -> int:
        counts = re.findall(r"\| (\d+)/\d+ \[", self.stderr)  # tqdm's "| 3/6 ["
        return int(counts[-1]) if counts else 0

    def wait_for_episodes(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.episodes_done() < count:
            assert self.process.poll() is None, f"exited early ({self.process.returncode}):\n{self.stderr}"
            assert time.monotonic() < deadline, f"no {count} episodes in {timeout} s:\n{self.stderr}"
            time.sleep(0.1)

    def env_workers(self) -> list[int]:
        """The pids of its env worker processes (spawned children; not the resource tracker)."""
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == self.process.pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def wait(self, timeout: float = 180.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        for reader in self._readers:
            reader.join(10)
        return code


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # it had exited already
        pass


def test_an_env_worker_that_keeps_dying_is_a_one_line_error_not_a_silent_exit_141(
        tmp_path, tiny_checkpoint):  # noqa: F811
    """Every command set SIGPIPE to its default action, so a write to a dead worker's pipe killed the process
    with no word (exit 141); a death noticed otherwise was a traceback. Now each death restarts the env, and
    crashes in a row with no episode ending in between give up with one line, keeping what had ended."""
    out = tmp_path / "eval"
    run = EvalProcess("--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "--episodes-per-task", "20",
                      "--num-envs", "2", "--workers", "2", "--videos", "0", "--out", str(out))
    run.wait_for_episodes(2)  # an episode takes about a second: the kills come mid-run
    while run.process.poll() is None:  # every worker, the replacements' too
        for pid in run.env_workers():
            _kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    code = run.wait()
    err = run.stderr
    assert code == 1, (code, err)
    assert "Traceback" not in err and "env restart 1: env worker" in err and "env restart 4" not in err
    assert re.search(r"\nerror: the env crashed 3 times in a row without finishing an episode; giving up "
                     r"\(last: env worker \d .*died with exit code -9", err), err
    report = json.loads((out / "eval.json").read_text())
    assert report["complete"] is False and 2 <= len(report["episodes"]) < 20
    assert f"{len(report['episodes'])}/20 episodes done, partial results in {out / 'eval.json'}" in err


@pytest.mark.slow
def test_an_env_worker_killed_mid_eval_is_replaced_and_the_results_are_an_undisturbed_evals(
        tmp_path, tiny_checkpoint):  # noqa: F811
    common = ["--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "PressButton", "--episodes-per-task", "6",
              "--num-envs", "2", "--videos", "0"]
    run = EvalProcess(*common, "--workers", "2", "--out", str(tmp_path / "killed"))
    run.wait_for_episodes(2)
    _kill(run.env_workers()[0], signal.SIGKILL)
    assert run.wait() == 0, run.stderr
    assert len(re.findall(r"env restart \d", run.stderr)) == 1 and "Traceback" not in run.stderr
    assert main(["eval", *common, "--workers", "0", "--out", str(tmp_path / "undisturbed")]) == 0
    killed, undisturbed = (json.loads((tmp_path / name / "eval.json").read_text())
                           for name in ("killed", "undisturbed"))
    assert killed["env_restarts"] == 1 and killed["complete"] is True
    assert killed["episodes"] == undisturbed["episodes"] and killed["per_task"] == undisturbed["per_task"]


def test_ctrl_c_exits_130_as_interrupted_and_keeps_the_finished_episodes(tmp_path, tiny_checkpoint):  # noqa: F811
    """Ctrl-C signals the whole process group. The workers are signalled first here, so that a worker that
    quits on it (as they did) is dead when the parent next writes to it: exit 141 or a traceback, not 130."""
    out = tmp_path / "eval"
    run = EvalProcess("--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "--episodes-per-task", "20",
                      "--num-envs", "2", "--workers", "2", "--videos", "0", "--out", str(out))
    run.wait_for_episodes(2)
    for pid in run.env_workers():
        _kill(pid, signal.SIGINT)
    time.sleep(1.0)
    _kill(run.process.pid, signal.SIGINT)
    code = run.wait()
    err = run.stderr
    assert code == 130, (code, err)
    assert err.rstrip().endswith("interrupted") and "Traceback" not in err
    report = json.loads((out / "eval.json").read_text())
    done = len(report["episodes"])
    assert report["complete"] is False and 2 <= done < 20 and report["per_task"]["Reach"]["episodes"] == done
    assert f"{done}/20 episodes done, partial results in {out / 'eval.json'}" in err


def test_an_interrupted_eval_writes_its_finished_episodes_or_says_nothing_was_written(
        tmp_path, tiny_checkpoint, monkeypatch, capsys):  # noqa: F811
    from vla_rl.cli import factories

    load_policy = factories.load_policy

    def interrupted_after(calls: int):
        def load(*args, **kwargs):
            policy = load_policy(*args, **kwargs)
            predict, count = policy.predict_actions, [0]

            def predict_until_ctrl_c(obs):
                count[0] += 1
                if count[0] > calls:
                    raise KeyboardInterrupt
                return predict(obs)

            policy.predict_actions = predict_until_ctrl_c
            return policy
        return load

    argv = ["eval", "--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "--episodes-per-task", "2",
            "--num-envs", "1", "--workers", "0", "--videos", "0"]
    monkeypatch.setattr(factories, "load_policy", interrupted_after(60))  # an episode is 50 decisions
    assert main(argv + ["--out", str(tmp_path / "partial")]) == 130
    report = json.loads((tmp_path / "partial" / "eval.json").read_text())
    assert report["complete"] is False and [e["init_state_id"] for e in report["episodes"]] == [0]
    assert report["per_task"]["Reach"]["episodes"] == 1 and (tmp_path / "partial" / "success.png").is_file()
    err = capsys.readouterr().err
    assert f"1/2 episodes done, partial results in {tmp_path / 'partial' / 'eval.json'}" in err
    monkeypatch.setattr(factories, "load_policy", interrupted_after(5))
    assert main(argv + ["--out", str(tmp_path / "new" / "none")]) == 130
    assert "no episode had ended: no results written" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # the folders it made for the results are gone again


@pytest.fixture(scope="module")
def greedy_eval(tmp_path_factory, tiny_checkpoint):  # noqa: F811
    """One evaluation's folder; its videos folder held a user's video and an earlier evaluation's."""
    out = tmp_path_factory.mktemp("greedy") / "eval"
    (out / "videos").mkdir(parents=True)
    (out / "videos" / "Reach_evaluation_final.mp4").write_bytes(b"the user's")
    (out / "videos" / "Reach_eval7_success.mp4").write_bytes(b"an earlier evaluation's")
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "PressButton",
                 "--episodes-per-task", "2", "--num-envs", "2", "--workers", "0", "--videos", "1",
                 "--out", str(out)]) == 0
    return out, json.loads((out / "eval.json").read_text())


def test_eval_json_lists_every_episode(greedy_eval):
    _, report = greedy_eval
    assert [(e["task"], e["init_state_id"]) for e in report["episodes"]] == [
        ("Reach", 0), ("Reach", 1), ("PressButton", 0), ("PressButton", 1)]
    for episode in report["episodes"]:
        assert set(episode) == {"task", "init_state_id", "success", "steps", "instruction", "physics_diverged",
                                "init_state_unsettled"}
        assert episode["steps"] == 50 and episode["success"] is False and episode["instruction"]
    assert report["complete"] is True and report["episodes_per_task"] == 2


def test_eval_json_records_the_libraries_device_checkpoint_digest_and_changes(
        greedy_eval, tiny_checkpoint):  # noqa: F811
    import hashlib

    import torch
    import transformers

    _, report = greedy_eval
    assert report["torch_version"] == torch.__version__ and report["transformers_version"] == transformers.__version__
    assert report["policy_device"] == "cpu"
    assert report["checkpoint_manifest_sha256"] == hashlib.sha256(
        (Path(tiny_checkpoint) / "manifest.json").read_bytes()).hexdigest()
    assert report["policy_seed"] is None and report["greedy"] is True  # an int only when sampling
    if report["code_commit"] and report["code_commit"].endswith("-dirty"):
        assert report["changed_files"] and all(isinstance(line, str) for line in report["changed_files"])
    else:
        assert "changed_files" not in report


def test_changed_files_are_capped_and_absent_git_is_no_error(monkeypatch):
    from sim_envs import versions

    monkeypatch.setattr(versions, "_git_state", lambda: ("abc", [f" M file{i}.py" for i in range(60)]))
    assert versions.git_changed_files(limit=50)[-1] == "... and 10 more" and len(versions.git_changed_files()) == 51
    assert versions.git_commit() == "abc-dirty"

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.undo()
    versions._git_state.cache_clear()
    monkeypatch.setattr(versions.subprocess, "run", no_git)
    try:
        assert versions.git_commit() is None and versions.git_changed_files() == []
    finally:
        versions._git_state.cache_clear()


def test_video_clean_up_removes_only_the_names_the_eval_writes(greedy_eval):
    out, report = greedy_eval
    videos = out / "videos"
    assert (videos / "Reach_evaluation_final.mp4").read_bytes() == b"the user's"
    assert not (videos / "Reach_eval7_success.mp4").exists()
    written = sorted(Path(video["file"]).name for video in report["videos"])
    assert sorted(path.name for path in videos.glob("*_eval?_*.mp4")) == written


def test_chart_title_videos_and_weights_say_what_was_evaluated(greedy_eval, tiny_checkpoint, tmp_path):  # noqa: F811
    import imageio.v3 as iio

    from tests.policy.conftest import make_policy
    from vla_rl.cli.evaluation import chart_title, describe_weights
    from vla_rl.policy.checkpoint import save_checkpoint

    out, report = greedy_eval
    checkpoint = Path(tiny_checkpoint)
    assert chart_title(report) == (f"held-out success: {checkpoint.parent.name}/{checkpoint.name}\n"
                                   "2 episodes per task, greedy (argmax)")
    sampled = dict(report, greedy=False, greedy_decoding=None, sample_temperature=0.7, policy_seed=3,
                   weights="last update", complete=False)
    assert chart_title(sampled).endswith("2 episodes per task, sampled at T=0.7 (seed 3), last update weights, "
                                         "PARTIAL: 4 episodes")
    video = iio.imread(report["videos"][0]["file"])
    assert video.shape[1:] == (256 + 16, 256, 3)  # a caption bar above the enlarged 32 px frames
    assert video[:, :16].max() > 200 and video[:, :16].mean() < 60  # white text on black

    policy = make_policy()
    average = {"iteration": 30, "decay": 0.95, "training_weights": {}}
    averaged = save_checkpoint(tmp_path / "iter_000030", policy.model, policy.action_tokenizer,
                               training_state={"rl": {"weights_average": average}})
    plain = save_checkpoint(tmp_path / "iter_000031", policy.model, policy.action_tokenizer,
                            training_state={"rl": {"iteration": 31}})
    assert describe_weights(averaged, False) == "as saved: the weight average (weights_ema 0.95, up to iteration 30)"
    assert describe_weights(plain, False) == describe_weights(checkpoint, False) == "as saved"
    assert describe_weights(averaged, True) == "last update"
    assert chart_title(dict(report, weights=describe_weights(averaged, False))).endswith(", weight average")


def test_eval_names_the_checkpoint_and_a_skipped_corrupt_newer_one(tmp_path, capsys):
    from tests.policy.conftest import make_policy
    from vla_rl.core.checkpoint_dir import point_latest
    from vla_rl.policy.checkpoint import save_checkpoint

    policy = make_policy()
    for step in (1, 2):
        save_checkpoint(tmp_path / "run" / f"step_00000{step}", policy.model, policy.action_tokenizer,
                        extra={"trained_tasks": ["Reach"]})
    point_latest(tmp_path / "run", "step_000002", 2)
    weights = tmp_path / "run" / "step_000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--episodes-per-task", "1", "--num-envs", "1",
                 "--workers", "0", "--videos", "0"]) == 0
    captured = capsys.readouterr()
    assert f"evaluating {tmp_path / 'run' / 'step_000001'}\n" in captured.out
    skipped = [line for line in captured.err.splitlines() if "step_000002" in line]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipping checkpoint {tmp_path / 'run' / 'step_000002'}: ")
    assert "checksum" in skipped[0] and "UserWarning" not in captured.err
    report = json.loads((tmp_path / "run" / "eval_step_000001" / "eval.json").read_text())
    assert report["requested"] == str(tmp_path / "run") and report["fallback"] == [skipped[0]]


def test_eval_help_matches_what_the_options_do(capsys):
    from tests.cli.test_cli import _help

    text = _help(["eval"], capsys)
    assert "policy checkpoint directory, or a run directory" in text
    assert "(default: eval_<checkpoint name> beside the checkpoint; for a run directory, " \
           "<run>/eval_<its newest valid checkpoint>)" in text
    assert "0 = step the envs in this process" in text


def test_an_output_path_that_cannot_be_created_fails_before_the_policy_loads(
        tmp_path, tiny_checkpoint, monkeypatch, capsys):  # noqa: F811
    """As root, ``os.access`` passed ``--out /proc/x``; mkdir failed only after the whole evaluation."""
    from vla_rl.cli import factories
    from vla_rl.core import output_paths

    monkeypatch.setattr(output_paths.os, "access", lambda *args: True)  # what root is told
    monkeypatch.setattr(factories, "load_policy", lambda *args, **kwargs: pytest.fail("loaded before --out was made"))
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "--out", "/proc/vla_rl_eval"]) == 2
    assert "evaluation output directory /proc/vla_rl_eval cannot be written: " in capsys.readouterr().err


def test_envs_list_into_a_closed_pipe_exits_quietly():
    """The quiet exit SIGPIPE's default action gave `vla-rl envs list | head`, without that action."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "vla_rl.cli.main", "envs", "list", "--suite", "tabletop"],
                              cwd=REPO, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == ""
