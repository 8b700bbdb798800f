"""Bootstrap CIs of (partial) correlations: repalign's vectorized resampling vs the plain loop.

Prints ours-vs-baseline time ratios measured side by side, on the paper's size (490 models):
baseline = one scipy.stats.pearsonr / pingouin.partial_corr call per resample. Both use the
same resample indices, and the script checks that the CIs agree.

    .venv/bin/python benchmarks/bench_stats_bootstrap.py [--n-models 490] [--n-bootstrap 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import pingouin
import scipy.stats

from repalign import stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-models", type=int, default=490)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, b = args.n_models, args.n_bootstrap
    z = rng.normal(size=n)
    x = z + rng.normal(size=n)
    y = 0.5 * x + z + rng.normal(size=n)

    start = time.perf_counter()
    ours = stats.bootstrap_correlation_ci(x, y, n_bootstrap=b, random_state=1)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    index = np.random.default_rng(1).integers(0, n, size=(b, n))
    values = [scipy.stats.pearsonr(x[i], y[i]).statistic for i in index]
    base = tuple(np.percentile(values, [2.5, 97.5]))
    t_base = time.perf_counter() - start
    assert np.allclose(ours, base), (ours, base)
    print(
        f"pearson bootstrap  n={n} B={b}: ours {t_ours * 1e3:8.1f} ms  scipy loop {t_base * 1e3:8.1f} ms  "
        f"speed-up x{t_base / t_ours:.1f}"
    )

    b_partial = max(1, b // 5)  # the pingouin loop is slow; fewer resamples, same comparison
    start = time.perf_counter()
    ours = stats.bootstrap_correlation_ci(x, y, z, n_bootstrap=b_partial, random_state=2)
    t_ours = time.perf_counter() - start
    frame = pd.DataFrame({"x": x, "y": y, "z": z})
    start = time.perf_counter()
    index = np.random.default_rng(2).integers(0, n, size=(b_partial, n))
    values = [
        pingouin.partial_corr(data=frame.iloc[i].reset_index(drop=True), x="x", y="y", covar="z")["r"].iloc[0]
        for i in index
    ]
    base = tuple(np.percentile(values, [2.5, 97.5]))
    t_base = time.perf_counter() - start
    assert np.allclose(ours, base), (ours, base)
    print(
        f"partial bootstrap  n={n} B={b_partial}: ours {t_ours * 1e3:8.1f} ms  pingouin loop "
        f"{t_base * 1e3:8.1f} ms  speed-up x{t_base / t_ours:.1f}"
    )


if __name__ == "__main__":
    main()
