"""Cold start of ``repalign align MODEL --human peterson:animals`` on cached embeddings.

Times, in the same run: the whole command (a fresh process each time: imports, the triplet
counts, the stimulus bootstrap) with the default 1000 bootstrap resamples, the same with the
triplet counts left to numba's cached kernels (the baseline: loading numba costs a fresh
process about half a second), and with ``--n-bootstrap 0``; a bare ``import repalign.cli``; and, in process, the Pearson/Spearman bootstrap
computed for all resamples at once (ours) against scipy called once per resample (the
straightforward loop, and what the code did before), on the same resamples. Target: the command
under 1.5 s wall on cached embeddings. The last line is JSON.

Run: REPALIGN_MIRROR=../shared/data .venv/bin/python benchmarks/bench_cold_start.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

MODEL = "tflite:mobilenet_v1_0.25_128_quant"


def _wall(command: list[str], env: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bootstrap_ratio(repeat: int) -> tuple[float, float]:
    from repalign.alignment import bootstrap, similarity_matrix
    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings

    (animals,) = load_human("peterson:animals")
    model_sim = similarity_matrix(extract_embeddings(MODEL, animals.images()))
    human = animals.similarity
    resamples = bootstrap._resamples(120, 1000, 0)
    methods = ("pearson", "spearman")
    ours, theirs = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        fast = bootstrap._correlations_resampled(model_sim, human, resamples, methods)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        slow = bootstrap._correlations_resampled_directly(model_sim, human, resamples, methods)
        theirs.append(time.perf_counter() - start)
    for method in methods:
        np.testing.assert_allclose(fast[method], slow[method], rtol=0, atol=1e-12)
    return statistics.median(ours), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "REPALIGN_CACHE_HOME": cache}
        os.environ["REPALIGN_CACHE_HOME"] = cache
        align = [sys.executable, "-m", "repalign", "align", MODEL, "--human", "peterson:animals"]
        subprocess.run(align + ["--n-bootstrap", "0"], env=env, check=True, capture_output=True)  # caches
        default = _wall(align, env, args.repeat)
        # the same command with the triplet counts left to the numba kernels (what it did before
        # repalign.alignment._triplet_small): the baseline of this run
        with_numba = [
            sys.executable,
            "-c",
            "import sys; import repalign.alignment._triplet_small as small; small.SMALL_N = 0; "
            "from repalign.cli import main; sys.exit(main())",
            *align[3:],
        ]
        kernels = _wall(with_numba, env, args.repeat)
        no_bootstrap = _wall(align + ["--n-bootstrap", "0"], env, args.repeat)
        bare = _wall([sys.executable, "-c", "import repalign.cli"], env, args.repeat)
        ours, loop = _bootstrap_ratio(args.repeat)
    print(f"repalign align (cached, 1000 resamples)   {default:6.2f} s   target < 1.5 s")
    print(f"  the same, triplets by the numba kernels {kernels:6.2f} s   (ratio {kernels / default:.2f}x)")
    print(f"repalign align (cached, --n-bootstrap 0)    {no_bootstrap:6.2f} s")
    print(f"python -c 'import repalign.cli'           {bare:6.2f} s")
    print(f"pearson+spearman bootstrap, 1000 resamples: ours {ours:.3f} s, scipy loop {loop:.3f} s, x{loop / ours:.1f}")
    print(
        json.dumps(
            {
                "align_s": default,
                "align_numba_kernels_s": kernels,
                "align_no_bootstrap_s": no_bootstrap,
                "import_cli_s": bare,
                "bootstrap_ours_s": ours,
                "bootstrap_loop_s": loop,
            }
        )
    )


if __name__ == "__main__":
    main()
