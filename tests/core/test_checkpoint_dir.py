"""Finding a run's checkpoint when its pointer or a checkpoint is missing, as a crash can leave them."""

import json
import os
import re

import pytest

from vla_rl.core.checkpoint_dir import (CorruptCheckpointError, checkpoint_to_resume, commit_checkpoint_dir,
                                        latest_valid_checkpoint,
                                        point_latest, refuse_previous_run, resolve_checkpoint, staging_dir)


def checkpoint(run, name: str, content: str = "weights"):
    tmp = staging_dir(run / name)
    (tmp / "model.bin").write_text(content)
    return commit_checkpoint_dir(tmp, run / name)


def test_resolve_finds_the_newest_checkpoint_without_a_readable_pointer(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2):
        checkpoint(run, f"step_{step:06d}")
    assert resolve_checkpoint(run) == run / "step_000002"  # a save and no pointer yet: the crash window
    (run / "latest.json").write_text("")  # cut short
    with pytest.warns(UserWarning, match="unreadable"):
        assert resolve_checkpoint(run) == run / "step_000002"
    point_latest(run, "step_000001", 1)
    assert resolve_checkpoint(run) == run / "step_000001"  # a readable pointer is followed
    checkpoint(run, "iter_000003")
    (run / "latest.json").unlink()
    with pytest.raises(FileNotFoundError, match="several kinds"):
        resolve_checkpoint(run)
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory"):
        resolve_checkpoint(tmp_path / "empty")
    (run / "step_000002" / "manifest.json").unlink()  # the weights' manifest is what is missing, and said so
    (run / "step_000002" / "model.safetensors").write_text("weights")
    with pytest.raises(CorruptCheckpointError, match="step_000002 has no manifest.json"):
        resolve_checkpoint(run / "step_000002")


def test_a_checkpoint_caught_between_the_renames_of_its_replacement_is_still_found(tmp_path):
    """Replacing ``iter_000002`` renames it to ``iter_000002.old-<pid>`` and then the new one into place; a
    kill between the two leaves only the old, complete copy."""
    run = tmp_path / "run"
    checkpoint(run, "iter_000001")
    checkpoint(run, "iter_000002")
    os.replace(run / "iter_000002", run / f"iter_000002.old-{os.getpid()}")
    point_latest(run, "iter_000002", 2)
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        found = latest_valid_checkpoint(run, "iter_")
    assert found == run / f"iter_000002.old-{os.getpid()}"
    checkpoint(run, "iter_000002", "newer")  # once a complete iter_000002 exists it comes first
    assert latest_valid_checkpoint(run, "iter_") == run / "iter_000002"
    assert json.loads((run / "iter_000002" / "manifest.json").read_text())


def test_leftovers_of_an_earlier_process_and_odd_manifests_do_not_stop_a_resume(tmp_path):
    run = tmp_path / "run"
    checkpoint(run, "iter_000001")
    checkpoint(run, "iter_000002")
    stale = run / f"iter_000002.old-{os.getpid()}"  # a killed process with this pid (containers reuse pids)
    stale.mkdir()
    (stale / "model.bin").write_text("older")
    checkpoint(run, "iter_000002", "newer")  # the rename over the leftover failed (directory not empty)
    assert (run / "iter_000002" / "model.bin").read_text() == "newer" and not stale.exists()
    (run / "iter_000002" / "manifest.json").write_text("[1, 2]")  # valid JSON, not a manifest
    with pytest.warns(UserWarning, match="not a mapping"):
        assert latest_valid_checkpoint(run, "iter_") == run / "iter_000001"
    (run / "latest.json").write_bytes(b"\xff\xfe")  # a pointer that is not text
    with pytest.warns(UserWarning):
        assert latest_valid_checkpoint(run, "iter_") == run / "iter_000001"
        assert resolve_checkpoint(run) == run / "iter_000001"


def test_a_run_stopped_before_its_first_checkpoint_is_neither_sent_to_resume_nor_back(tmp_path):
    """A run with a history but no valid checkpoint cannot be continued: refusing a fresh run into its out_dir
    must not suggest --resume, and --resume's refusal must not suggest a fresh run there; both say to delete
    the directory or choose another out_dir. With a checkpoint, the fresh run is sent to --resume."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 20, "loss": 1.0}) + "\n")
    remedy = f"delete {re.escape(str(run))} to start afresh, or choose another out_dir"
    with pytest.raises(FileExistsError, match=f"holds a previous run .*no valid checkpoint.*: {remedy}") as refused:
        refuse_previous_run(run, "step_")
    assert "continue it with --resume" not in str(refused.value)
    with pytest.raises(FileNotFoundError, match=f"--resume: .* holds a previous run .*no valid checkpoint.*{remedy}"):
        checkpoint_to_resume(run, "step_")
    with pytest.raises(FileNotFoundError, match="no run there to continue.*start the run without --resume"):
        checkpoint_to_resume(tmp_path / "never_trained", "step_")
    checkpoint(run, "step_000040")
    with pytest.raises(FileExistsError, match="holds a previous run .*: continue it with --resume"):
        refuse_previous_run(run, "step_")
    assert checkpoint_to_resume(run, "step_") == run / "step_000040"
    with pytest.raises(FileExistsError, match="holds a previous run .*: train elsewhere"):  # a caller's own remedy
        refuse_previous_run(run, "step_", "train elsewhere")
    refuse_previous_run(tmp_path / "never_trained", "step_")


def test_truncate_history_drops_later_and_cut_lines_and_restores_the_checkpoints_own(tmp_path):
    import json

    import pytest

    from vla_rl.core.checkpoint_dir import truncate_history

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": step}) + "\n" for step in (10, 20, 30)) + '{"step": 4')
    truncate_history(path, "step", 20)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [10, 20]
    truncate_history(path, "step", 30, checkpointed_line={"step": 30, "loss": 0.5})  # its line was never written
    assert [json.loads(line) for line in path.read_text().splitlines()][-1] == {"step": 30, "loss": 0.5}
    truncate_history(path, "step", 30, checkpointed_line={"step": 30, "loss": 0.9})  # written: not added again
    assert len(path.read_text().splitlines()) == 3
    path.write_text('{"step": 10}\n{"ste\n{"step": 20}\n')
    with pytest.raises(ValueError, match="line 2"):
        truncate_history(path, "step", 20)
    truncate_history(tmp_path / "none.jsonl", "step", 5)  # no history yet: nothing to do
    assert not (tmp_path / "none.jsonl").exists()


def test_a_node_remembers_verified_checksums_until_a_file_changes(tmp_path, monkeypatch):
    """The driver, learners and actors load one checkpoint: a file this node hashed unchanged is not hashed
    again, a changed one is, and a damaged cache entry neither passes a bad file nor refuses a good one."""
    import vla_rl.core.checkpoint_dir as checkpoint_dir

    monkeypatch.setenv("VLA_RL_VERIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(checkpoint_dir, "_SETTLED_SECONDS", -1.0)  # the files are seconds old, not minutes
    hashed = []
    sha256_of = checkpoint_dir._sha256_of
    monkeypatch.setattr(checkpoint_dir, "_sha256_of",
                        lambda file: hashed.append(os.path.basename(file.name)) or sha256_of(file))
    staging = checkpoint_dir.staging_dir(tmp_path / "step_1")
    (staging / "weights.bin").write_bytes(b"a" * 1000)
    directory = checkpoint_dir.commit_checkpoint_dir(staging, tmp_path / "step_1")
    hashed.clear()
    checkpoint_dir.verify_checkpoint(directory)
    checkpoint_dir.verify_checkpoint(directory)
    assert hashed == ["weights.bin"]  # once, by the first verification
    (directory / "weights.bin").write_bytes(b"b" * 1000)  # same size, rewritten in place
    with pytest.raises(checkpoint_dir.CorruptCheckpointError, match="weights.bin does not match"):
        checkpoint_dir.verify_checkpoint(directory)
    (directory / "weights.bin").write_bytes(b"a" * 1000)
    checkpoint_dir.verify_checkpoint(directory)  # cached for this version of the file
    for entry in (tmp_path / "cache").iterdir():
        entry.write_text("0" * 64)  # a wrong digest in the cache
    checkpoint_dir.verify_checkpoint(directory)
    monkeypatch.setattr(checkpoint_dir, "_SETTLED_SECONDS", 3600.0)
    (directory / "weights.bin").write_bytes(b"c" * 1000)  # just changed: never cached, always hashed
    hashed.clear()
    for _ in range(2):
        with pytest.raises(checkpoint_dir.CorruptCheckpointError):
            checkpoint_dir.verify_checkpoint(directory)
    assert hashed == ["weights.bin", "weights.bin"]
    monkeypatch.setenv("VLA_RL_VERIFY_CACHE", "off")
    assert checkpoint_dir.verified_digest_cache() is None
    monkeypatch.setenv("VLA_RL_VERIFY_CACHE", "on")  # the default place, not a directory named "on"
    assert checkpoint_dir.verified_digest_cache().parts[-3:] == (".cache", "vla_rl", "verified")
    monkeypatch.setenv("VLA_RL_VERIFY_CACHE", "cache")  # each Ray worker's own working directory: not cached
    with pytest.warns(UserWarning, match="not an absolute directory"):
        assert checkpoint_dir.verified_digest_cache() is None
