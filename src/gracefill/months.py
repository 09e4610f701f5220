"""The monthly time axis: month stamps, GRACE availability and the train / test / gap split."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import xarray as xr

#: Months missing inside the GRACE / GRACE-FO record besides the inter-mission gap (data.md).
#: Used only by the synthetic world; real products derive availability from their time axis.
GRACE_MISSING_MONTHS = (
    "2002-06", "2002-07", "2003-06", "2011-01", "2011-06", "2012-05", "2012-10", "2013-03",
    "2013-08", "2013-09", "2014-02", "2014-07", "2014-12", "2015-06", "2015-10", "2015-11",
    "2016-04", "2016-09", "2016-10", "2017-02", "2018-08", "2018-09",
)
GRACE_FIRST_MONTH = "2002-04"

#: CF flag values of the ``split`` variable written into the tensors file. ``pseudo_gap``: observed
#: months held out of training and test, scored like the gap against their observations.
SPLIT_FLAGS = {"unused": 0, "train": 1, "test": 2, "gap": 3, "missing": 4, "pseudo_gap": 5}
#: CF flag values of the ``month_flag`` variable of the reconstruction: GRACE's status of a month.
#: ``missing``: no field inside the record; ``hindcast``: before the first GRACE month of the
#: record; ``forecast``: after its last (a month with predictors but no release yet).
MONTH_FLAGS = {"observed": 0, "missing": 1, "gap": 2, "hindcast": 3, "forecast": 4}


def month_range(start: str, end: str) -> pd.DatetimeIndex:
    """Month-start stamps from ``start`` to ``end`` inclusive ("YYYY-MM")."""
    return pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="MS")


def to_month_start(times: Iterable) -> pd.DatetimeIndex:
    """Assign arbitrary time stamps (mid-month, day of a solution span) to their month start."""
    index = pd.DatetimeIndex(pd.to_datetime(np.asarray(times)))
    return index.to_period("M").to_timestamp(how="start")


def month_labels(months: pd.DatetimeIndex) -> list[str]:
    """"YYYY-MM" labels for month stamps."""
    return [f"{m.year:04d}-{m.month:02d}" for m in months]


def in_window(months: pd.DatetimeIndex, start: str, end: str) -> np.ndarray:
    """Boolean mask of months within [start, end] ("YYYY-MM", inclusive)."""
    return np.asarray((months >= pd.Timestamp(start)) & (months <= pd.Timestamp(end)))


def synthetic_grace_availability(months: pd.DatetimeIndex, gap: tuple[str, str]) -> np.ndarray:
    """The real mission's availability pattern: none before 2002-04, the missing months and the gap."""
    labels = np.array(month_labels(months))
    observed = np.asarray(months >= pd.Timestamp(GRACE_FIRST_MONTH))
    observed &= ~np.isin(labels, GRACE_MISSING_MONTHS)
    observed &= ~in_window(months, *gap)
    return observed


def split_labels(
    months: pd.DatetimeIndex,
    observed: np.ndarray,
    has_inputs: np.ndarray,
    train: tuple[str, str],
    gap: tuple[str, str],
    pseudo_gap: tuple[str, str] | None = None,
) -> np.ndarray:
    """Label every month with a SPLIT_FLAGS value.

    train: observed months inside the training window; test: observed months after it;
    gap: the inter-mission gap; pseudo_gap: observed months of the ``pseudo_gap`` window, held
    out of both; missing: other months without a target; unused: months without a complete
    lagged input stack, or observed months before the training window.
    """
    train_window = in_window(months, *train)
    after_train = np.asarray(months > pd.Timestamp(train[1]))
    gap_window = in_window(months, *gap)
    held_out = in_window(months, *pseudo_gap) & observed if pseudo_gap else np.zeros(len(months), dtype=bool)
    labels = np.full(len(months), SPLIT_FLAGS["unused"], dtype=np.int8)
    labels[~observed] = SPLIT_FLAGS["missing"]
    labels[gap_window] = SPLIT_FLAGS["gap"]
    labels[observed & train_window] = SPLIT_FLAGS["train"]
    labels[observed & after_train & ~gap_window] = SPLIT_FLAGS["test"]
    labels[held_out & ~gap_window] = SPLIT_FLAGS["pseudo_gap"]
    labels[~has_inputs] = SPLIT_FLAGS["unused"]
    return labels


def month_flags(observed: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """:data:`MONTH_FLAGS` of every month from GRACE's availability ``observed`` and the gap mask
    ``gap`` (both boolean over the months): observed; gap; hindcast before the first observed
    month, forecast after the last; missing otherwise (inside the record)."""
    observed, gap = np.asarray(observed, dtype=bool), np.asarray(gap, dtype=bool)
    if observed.shape != gap.shape or observed.ndim != 1:
        raise ValueError(f"observed and gap must be 1-D masks of the same length, got {observed.shape} and {gap.shape}")
    flags = np.full(observed.shape, MONTH_FLAGS["missing"], dtype=np.int8)
    seen = np.flatnonzero(observed)
    if seen.size:
        index = np.arange(observed.size)
        flags[index < seen[0]] = MONTH_FLAGS["hindcast"]
        flags[index > seen[-1]] = MONTH_FLAGS["forecast"]
    flags[gap] = MONTH_FLAGS["gap"]
    flags[observed] = MONTH_FLAGS["observed"]
    return flags


def month_flag_attrs() -> dict:
    """CF flag attributes describing MONTH_FLAGS."""
    return {
        "long_name": "GRACE status of the month",
        "flag_values": np.array(list(MONTH_FLAGS.values()), dtype=np.int8),
        "flag_meanings": " ".join(MONTH_FLAGS),
    }


def months_between(start: str | pd.Timestamp, end: str | pd.Timestamp) -> int:
    """Whole months from ``start`` to ``end`` (negative when ``end`` is earlier)."""
    a, b = pd.Timestamp(start), pd.Timestamp(end)
    return (b.year - a.year) * 12 + b.month - a.month


def shift_month(month: str | pd.Timestamp, n: int) -> str:
    """The month ``n`` months after ``month`` as "YYYY-MM"."""
    return (pd.Timestamp(month).to_period("M") + n).strftime("%Y-%m")


def fold_ends(train_start: str, train_end: str, count: int, min_fit_months: int,
              min_validation_months: int) -> list[str]:
    """Last fit month of each forward-chaining validation fold inside the training window.

    Fold k fits on ``train_start..end_k`` and is validated on the training-window months after
    ``end_k``, so its leads reach ``train_end - end_k``. The ends are spread evenly from the
    first month that leaves ``min_fit_months`` to fit to the last that leaves
    ``min_validation_months`` to validate: the folds' leads grow like the test period's.
    """
    first = min_fit_months - 1
    last = months_between(train_start, train_end) - min_validation_months
    if count < 1 or last < first:
        raise ValueError(f"the training window {train_start}..{train_end} cannot hold {count} fold(s) with "
                         f"{min_fit_months} fit and {min_validation_months} validation months")
    offsets = [first] if count == 1 else np.linspace(first, last, count).round().astype(int).tolist()
    return [shift_month(train_start, int(k)) for k in offsets]


def split_attrs() -> dict:
    """CF flag attributes describing SPLIT_FLAGS."""
    return {
        "long_name": "role of the month in training and evaluation",
        "flag_values": np.array(list(SPLIT_FLAGS.values()), dtype=np.int8),
        "flag_meanings": " ".join(SPLIT_FLAGS),
    }


def time_coord(months: pd.DatetimeIndex) -> xr.DataArray:
    """A CF time coordinate of month starts."""
    return xr.DataArray(
        months.values.astype("datetime64[ns]"), dims="time",
        attrs={"standard_name": "time", "long_name": "first day of the month", "axis": "T"},
    )
