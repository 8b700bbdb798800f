"""Result store: schema, atomic unit files (even under SIGKILL), states, lock, load_study;
plus the progress display."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from repalign.errors import InputError, MissingDataError
from repalign.schema import RESULT_COLUMNS, conform
from repalign.store import StudyLockedError, StudyStore, load_study, new_manifest
from repalign.study.plan import Unit
from repalign.study.progress import StudyProgress


def _rows(model="m", n=3, status="ok", stage="alignment", value0=0.0):
    return pd.DataFrame(
        {
            "model": [model] * n,
            "model_id": [f"id:{model}"] * n,
            "stage": [stage] * n,
            "dataset": ["peterson:animals"] * n,
            "metric": ["pearson", "spearman", "triplet"][:n] + ["x"] * max(0, n - 3),
            "value": value0 + np.arange(n, dtype=float),
            "status": [status] * n,
            "error": [None if status == "ok" else "boom"] * n,
        }
    )


def test_unit_files_have_exactly_the_schema(tmp_path):
    store = StudyStore(tmp_path / "s")
    with store.locked():
        store.write_unit("a", _rows("a"), fingerprint="f")
        store.write_unit("b", _rows("b", stage="fewshot").assign(head="linear", shots=5), fingerprint="f")
    results = store.read_results()
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert {c: str(t) for c, t in results.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in RESULT_COLUMNS.items()
    }
    assert len(results) == 6
    assert results.loc[results["stage"] == "fewshot", "shots"].tolist() == [5, 5, 5]
    assert results.loc[results["stage"] == "alignment", "shots"].isna().all()


def test_unit_states_and_failed_unit_is_replaced(tmp_path):
    store = StudyStore(tmp_path)
    assert store.unit_state("u", "f1") == "missing"
    with store.locked():
        store.write_unit("u", _rows(status="failed"), fingerprint="f1")
        assert store.unit_state("u", "f1") == "failed"
        store.write_unit("u", _rows(value0=10.0), fingerprint="f1")
    assert store.unit_state("u", "f1") == "finished"
    assert store.unit_state("u", "f2") == "stale"  # computed under another config
    results = store.read_results()
    assert len(results) == 3 and (results["status"] == "ok").all()
    assert results["value"].tolist() == [10.0, 11.0, 12.0]


def test_stale_stages_are_those_whose_settings_changed(tmp_path):
    store = StudyStore(tmp_path)
    settings = {"alignment": "a1", "fewshot": "f1"}
    assert store.stale_stages("u", settings) is None  # no file: the whole unit runs
    with store.locked():
        store.write_unit("u", _rows(), fingerprint="f", stage_fingerprints=settings)
        store.write_unit("old", _rows(), fingerprint="f")  # written before stage fingerprints
        store.write_unit("bad", _rows(status="failed"), fingerprint="f", stage_fingerprints=settings)
    assert store.stale_stages("u", settings) == ()
    assert store.stale_stages("u", {"alignment": "a2", "fewshot": "f1"}) == ("alignment",)
    assert store.stale_stages("u", {"alignment": "a2", "fewshot": "f1", "robustness": "r"}) == (
        "alignment",
        "robustness",
    )
    assert store.stale_stages("u", {"fewshot": "f1"}) == ()  # a stage switched off computes nothing
    assert store.stale_stages("old", settings) is None
    assert store.stale_stages("bad", settings) is None  # failed rows: a crash may have cut stages short
    pd.testing.assert_frame_equal(store.read_unit("u"), conform(_rows()))


def test_damaged_unit_file_is_recomputed(tmp_path):
    store = StudyStore(tmp_path)
    store.results_dir.mkdir(parents=True)
    store.unit_file("u").write_bytes(b"not parquet")
    assert store.unit_state("u", "f") == "damaged"
    assert store.stale_stages("u", {"alignment": "a"}) is None  # computed whole


def test_write_outside_lock_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="inside StudyStore.locked"):
        StudyStore(tmp_path).write_unit("u", _rows(), fingerprint="f")


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    store = StudyStore(tmp_path)
    with store.locked():
        store.write_unit("u", _rows(value0=1.0), fingerprint="f")
        before = store.unit_file("u").read_bytes()

        def broken_write(table, where, **kwargs):
            with open(where, "wb") as handle:
                handle.write(b"PAR1 half a file")
            raise OSError("disk full")

        monkeypatch.setattr(pq, "write_table", broken_write)
        with pytest.raises(OSError, match="disk full"):
            store.write_unit("u", _rows(value0=99.0), fingerprint="f")
    assert store.unit_file("u").read_bytes() == before
    assert sorted(p.name for p in store.results_dir.iterdir()) == ["u.parquet"]


_WRITER = """
import sys, numpy as np, pandas as pd
from repalign.store import StudyStore
store = StudyStore(sys.argv[1])
n = 200_000
with store.locked():
    i = 0
    while True:
        frame = pd.DataFrame({"model": "m", "stage": "fewshot", "value": np.full(n, float(i)), "status": "ok"})
        store.write_unit("u", frame, fingerprint="f")
        print(i, flush=True)
        i += 1
"""


def test_sigkill_during_writes_never_leaves_a_partial_unit_file(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # one complete write happened
    time.sleep(0.7)  # kill in the middle of later writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    frame = StudyStore(tmp_path).read_results()
    assert len(frame) == 200_000
    assert frame["value"].nunique() == 1  # one whole version, never a mix
    # the killed writer's temporary file (if any) is invisible to readers
    assert [p.name for p in tmp_path.joinpath("results").glob("*.parquet")] == ["u.parquet"]


_HOLDER = """
import sys, time
from repalign.store import StudyStore
with StudyStore(sys.argv[1]).locked():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_writer_is_refused_and_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyLockedError, match=rf"being written by another run \(pid {holder.pid}\)"):
            with StudyStore(tmp_path).locked():
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with StudyStore(tmp_path).locked():  # a killed run leaves no stale lock
        pass


# a run that forked a child (which shares the lock's open file) before it was killed
_FORKING_HOLDER = """
import os, sys, time
from repalign.store import StudyStore
with StudyStore(sys.argv[1]).locked():
    if os.fork() == 0:
        time.sleep(3)
        os._exit(0)
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_lock_the_child_of_a_killed_run_still_holds_is_waited_for(tmp_path):
    import fcntl

    holder = subprocess.Popen([sys.executable, "-c", _FORKING_HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()  # the run's process is gone ...
    with open(tmp_path / ".lock") as probe:  # ... and its child still holds the lock
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with StudyStore(tmp_path).locked():  # taken once the child is gone, not refused
        pass


def test_public_api_is_lazy_and_points_here():
    import repalign
    from repalign.study.config import load_config
    from repalign.study.run import run_study

    assert repalign.load_study is load_study
    assert repalign.run_study is run_study and repalign.load_config is load_config
    code = "import sys, repalign.study, repalign.cli.run, repalign.cli.results; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_load_study_views_and_errors(tmp_path):
    store = StudyStore(tmp_path / "s")
    with store.locked():
        store.write_config('[study]\nname = "s"\n')
        store.write_manifest(new_manifest())
        store.write_unit("a", _rows("a"), fingerprint="f")
        store.write_unit("b", _rows("b", n=1, status="failed"), fingerprint="f")
        store.write_unit("c", _rows("c", n=2, stage="robustness"), fingerprint="f")
    study = load_study(tmp_path / "s")
    assert study.path == store.path
    assert study.config == {"study": {"name": "s"}}
    assert len(study.results) == 6
    assert study.alignment["model"].unique().tolist() == ["a"]
    assert study.robustness["model"].unique().tolist() == ["c"]
    assert study.fewshot.empty
    assert study.failures["model"].tolist() == ["b"] and study.failures["error"].tolist() == ["boom"]
    manifest = study.manifest
    assert manifest["packages"]["pandas"] == pd.__version__
    assert manifest["hardware"]["cpu_count"] == os.cpu_count()
    assert manifest["schema"] == list(RESULT_COLUMNS)

    with pytest.raises(MissingDataError, match="No study directory at"):
        load_study(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is not a study directory"):
        load_study(tmp_path / "empty")


def test_progress_plain_lines_count_failures_and_eta():
    stream = io.StringIO()
    units = [Unit(id=f"u{i}", model=f"m{i}", stages=("alignment",)) for i in range(3)]
    progress = StudyProgress(4, already_done=1, parallel=1, live=False, stream=stream)
    progress.unit_started(units[0])
    progress.unit_step(units[0], "alignment", "peterson:animals")
    progress.unit_finished(units[0], n_failed_rows=0, duration_s=10.0)
    progress.unit_started(units[1])
    progress.unit_finished(units[1], n_failed_rows=2, duration_s=20.0)
    progress.close()
    text = stream.getvalue()
    assert "4 models, 1 already finished, 3 to run" in text
    assert "m0: alignment peterson:animals" in text
    assert "[2/4] ok m0 in 10.0s; failures 0; ETA 20s" in text
    assert "[3/4] FAILED (2 failed rows) m1 in 20.0s; failures 1; ETA 15s" in text


def test_progress_live_display_renders(tmp_path):
    stream = io.StringIO()
    unit = Unit(id="u", model="tflite:x", stages=("alignment",))
    progress = StudyProgress(2, live=True, stream=stream)
    progress.unit_started(unit)
    progress.unit_step(unit, "fewshot", "mnist")
    progress.unit_finished(unit, n_failed_rows=1, duration_s=3.0)
    progress.close()
    text = stream.getvalue()
    assert "models" in text and "1/2" in text and "1 failed" in text and "failed tflite:x" in text


def test_unit_ids_are_file_safe_distinct_and_round_trip():
    from repalign.study.plan import unit_id

    names = ["a:b", "a_b", "onnx:/tmp/x y.onnx", "timm:resnet18@random", "timm:resnet18"]
    ids = [unit_id(n) for n in names]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9._\-]+", i) for i in ids)
    assert ids[3].startswith("timm_resnet18_random-")
    unit = Unit(id=ids[0], model="a:b", stages=("alignment", "fewshot"))
    assert Unit.from_dict(unit.to_dict()) == unit


def test_progress_names_the_ray_node_of_each_unit_and_its_retries():
    stream = io.StringIO()
    unit = Unit(id="u", model="m", stages=("alignment",))
    progress = StudyProgress(1, live=False, stream=stream)
    progress.unit_started(unit)
    progress.unit_node(unit, "10.0.0.7/0a1b2c3d")
    progress.unit_step(unit, "alignment", "peterson:animals")
    progress.unit_node(unit, "10.0.0.8/4e5f6a7b", 2)  # the first node was lost: Ray runs it again
    progress.unit_finished(unit, n_failed_rows=0, duration_s=1.0)
    progress.close()
    text = stream.getvalue()
    assert "m: running on 10.0.0.7/0a1b2c3d\n" in text
    assert "m: alignment peterson:animals on 10.0.0.7/0a1b2c3d" in text
    assert "m: running on 10.0.0.8/4e5f6a7b (attempt 2)" in text

    screen = io.StringIO()
    live = StudyProgress(1, live=True, stream=screen)
    live.unit_started(unit)
    live.unit_step(unit, "fewshot", "mnist")
    live.unit_node(unit, "[red]node", 2)  # shown as written, never as markup
    live.close()  # the final render shows the running unit's step and node
    assert "fewshot mnist on [red]node (attempt 2)" in screen.getvalue()
