"""A tiny Python package for hm's example pipeline (standard library only)."""


def mean(values):
    """Return the arithmetic mean of values; raise ValueError when there are none."""
    values = list(values)
    if not values:
        raise ValueError("mean of no values")
    return sum(values) / len(values)
