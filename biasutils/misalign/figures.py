"""Figures of the misalignments, for the notebook and the audit's report: the share of women per
occupation against the references, each group's share per occupation, and the embedding projection.

Apart so that the measures never draw: this is the stage's only module that uses matplotlib and seaborn.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..config import CULTURES
from ..tasks import ALL
from ._common import AUGMENTED, ORIGINAL, _ordered_occupations
from .values import occupation_reference

# ---------------------------------------------------------------------------------------------- figures


def projection_figure(projection: pd.DataFrame, title: str) -> plt.Figure:
    """Scatter of a :func:`projection_2d` frame, coloured by source."""
    figure, axis = plt.subplots(figsize=(5, 4))
    sns.scatterplot(data=projection, x="x1", y="x2", hue="source", s=12, alpha=0.6, linewidth=0, ax=axis)
    axis.set(title=title, xlabel="PC 1", ylabel="PC 2")
    return figure


def share_female_figure(generated: pd.DataFrame, original: pd.DataFrame,
                        reference: pd.DataFrame | None = None) -> plt.Figure:
    """Share of women per occupation: generated and original (:func:`group_shares` frames, Wilson
    intervals) next to the labour and perceived references (:func:`occupation_reference`)."""
    reference = (occupation_reference() if reference is None else reference).set_index("occupation")
    occupations = [o for o in _ordered_occupations(generated.occupation) if o != ALL]
    positions = np.arange(len(occupations))
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for offset, (label, shares) in zip((-0.15, 0.15), (("generated", generated), ("original", original))):
        female = shares[shares.group == "female"].set_index("occupation").reindex(occupations)
        errors = [female.share - female.ci_low, female.ci_high - female.share]
        axis.errorbar(positions + offset, female.share, yerr=errors, fmt="o", capsize=3, label=label)
    reference = reference.reindex(occupations)
    axis.scatter(positions, reference.labour_share_female, marker="_", s=300, color="black", label="labour (BLS)")
    axis.scatter(positions, reference.perceived_share_female, marker="x", color="grey", label="perceived (Kennison)")
    axis.axhline(0.5, color="grey", lw=0.5)
    axis.set_xticks(positions, occupations, rotation=20)
    axis.set(ylim=(0, 1), ylabel="share of women")
    axis.legend(fontsize=7)
    return figure


def group_share_figure(shares: pd.DataFrame, attribute: str) -> plt.Figure:
    """Who appears per occupation in the generated and the original data (a :func:`group_shares` frame with a
    ``data`` column): the share of women against the references for gender, each culture's share for culture."""
    generated, original = shares[shares.data == AUGMENTED], shares[shares.data == ORIGINAL]
    if attribute == "gender":
        return share_female_figure(generated, original)
    rows = shares[shares.occupation != ALL]
    grid = sns.catplot(data=rows, x="occupation", y="share", hue="group", col="data", kind="point", dodge=0.4,
                       linestyle="none", errorbar=None, height=3.2, aspect=1.4)
    for axis in grid.axes.flat:
        axis.axhline(1 / len(CULTURES), color="grey", lw=0.5)
        axis.tick_params(axis="x", labelrotation=20)
    grid.set_axis_labels("", "share of the occupation's samples")
    return grid.figure
