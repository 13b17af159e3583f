"""agents/train_ppo.py run as a user runs it, with tiny settings."""

import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlmba_env.observation import CANDIDATE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def test_train_ppo_script_trains_saves_and_logs(tmp_path):
    cmd = [
        sys.executable, str(ROOT / "agents" / "train_ppo.py"),
        "--env-id", "RLMBA-AVDigits-v0",
        "--env-kwargs", '{"initial_labels": 10, "per_round": 2, "rounds": 2, "learner": {"epochs": 10, "hidden": 8}}',
        "--total-timesteps", "16", "--n-steps", "8", "--batch-size", "4", "--n-epochs", "1",
        "--eval-episodes", "1", "--torch-threads", "1", "--log-dir", str(tmp_path), "--no-progress-bar",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    runs = list(tmp_path.glob("RLMBA-AVDigits-v0__maskable_ppo__1__*"))
    assert len(runs) == 1
    assert (runs[0] / "model.zip").is_file()
    assert f"TensorBoard logs: {runs[0]}" in out.stdout
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"test/top1", "test/top1_image", "test/top1_audio", "contribution/image",
            "contribution/audio", "charts/balance", "charts/episodic_return", "eval/top1", "eval/balance"} <= scalars
    assert len(events.Scalars("test/top1")) == 4  # 16 steps = 4 episodes of 2 rounds x 2 picks

    from sb3_contrib import MaskablePPO
    model = MaskablePPO.load(runs[0] / "model.zip")
    assert model.observation_space["candidates"].shape == (6 * 2, len(CANDIDATE_COLUMNS))
