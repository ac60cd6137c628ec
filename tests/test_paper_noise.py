"""bench/experiments/paper_noise.py at a tiny size: interleaved chunks through the real pipeline on
dm:fake_fez, a rerun that skips finished chunks, claims shared by workers, and pooled rows that say
when they are a subset."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paper_noise", ROOT / "bench" / "experiments" / "paper_noise.py")
paper_noise = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_noise)


def test_chunks_resume_and_pool(tmp_path, monkeypatch):
    name, k = "qlam-digits-chain", 2
    plan = tmp_path / name / "fake_fez" / "plan.json"
    plan.parent.mkdir(parents=True)
    plan.write_text(json.dumps({"plan_n": 0, "shots": 1000}))  # the dry run itself is tested in test_shotplan.py
    paper_noise.work([name], ["fake_fez"], 0, 0.99, k, 8, tmp_path)
    chunks = [json.loads((plan.parent / f"chunk{c:02d}of{k}.json").read_text()) for c in range(k)]
    assert [c["indices"] for c in chunks] == ["range(0, 8, 2)", "range(1, 8, 2)"]
    assert all(c["n"] == 4 and len(c["decisions"]) == 4 and c["shots"] == 1000 for c in chunks)
    assert not list(plan.parent.glob("*.running"))

    def never(*a, **kw):
        raise AssertionError("a finished chunk ran again")

    monkeypatch.setattr(paper_noise, "run_chunk", never)
    paper_noise.work([name], ["fake_fez"], 0, 0.99, k, 8, tmp_path)  # everything is there: nothing runs

    monkeypatch.setattr(paper_noise, "CHECKPOINTS", (name,))
    out = tmp_path / "pooled.json"
    row = paper_noise.collect(k, tmp_path, out)[name]["fake_fez"]
    assert row["n"] == 8 and row["subset"] is False
    assert row["accuracy"] == sum(c["correct"] for c in chunks) / 8
    assert row["exact_accuracy"] == sum(c["exact_correct"] for c in chunks) / 8
    (plan.parent / f"chunk01of{k}.json").unlink()
    row = paper_noise.collect(k, tmp_path, out)[name]["fake_fez"]
    assert row["n"] == 4 and row["subset"] is True and row["chunks"] == [0]
    assert json.loads(out.read_text())[name]["fake_fez"] == row


def test_a_live_claim_is_respected_and_a_dead_one_taken_over(tmp_path):
    path = tmp_path / "chunk00of20.json"
    lock = path.with_suffix(".running")
    lock.write_text(str(os.getpid()))
    assert not paper_noise.claim(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    lock.write_text(dead)
    assert paper_noise.claim(path)
    assert lock.read_text() == str(os.getpid())
    assert not paper_noise.claim(path)  # now it is ours, still live


def test_plan_without_a_recommendation_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(paper_noise, "plan_spec", lambda spec, confidence: {"recommended": None})
    with pytest.raises(SystemExit, match="no shot count meets confidence 0.99 .* pass a lower --confidence"):
        paper_noise.planned_shots("qlam-sfashion", "fake_fez", 200, 0.99, tmp_path)
    assert not list(tmp_path.rglob("plan.json"))
