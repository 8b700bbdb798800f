"""Plots for exploring results: ``repalign.plot.similarity_matrix``, ``model_bars``, ``comparison_heatmap``.

A short public name for :mod:`repalign.report.plots` (the report draws the same figures).
Importing it imports numpy and pandas, not matplotlib (each function imports it when it draws).
"""

from __future__ import annotations

from repalign.report.plots import ORDERS, comparison_heatmap, model_bars, similarity_matrix

__all__ = ["ORDERS", "comparison_heatmap", "model_bars", "similarity_matrix"]
