"""How the bench tables write a figure: bench/run.py and bench/real/report.py share it."""


def num(x):
    """Three significant digits or so; "—" for a missing figure (NaN)."""
    if x != x:
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    if abs(x) >= 1:
        return "%.2f" % x
    return "%.3f" % x
