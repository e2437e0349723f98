"""The ranges of the numeric command-line options, shared by every ``visec`` command.

typer checks them while it parses (``typer.Option(..., **SEED)``), so an out-of-range number is a
usage error naming the option before any work starts. The crop range is the one
:func:`visec.preprocess.align.check_crop` applies to Python callers (not imported from there:
that package loads pandas, and this module must stay free for the command line to start fast).

Core layer: the standard library only.
"""

from __future__ import annotations

import math


def finite(value: float | None) -> float | None:
    """typer callback of a float option: click's range check lets ``nan`` through (every comparison
    with it is false), so it is refused here, naming the option like any range error."""
    if value is not None and not math.isfinite(value):
        import click

        raise click.BadParameter(f"{value} is not a finite number.")
    return value


#: Seeds: numpy's and Lightning's range (Lightning replaces a seed outside it with 0, silently).
SEED = dict(min=0, max=2**32 - 1)
#: Face crop side in pixels and the context margin around the aligned face.
CROP_SIZE = dict(min=16, max=2048)
MARGIN = dict(min=0.0, max=2.0, callback=finite)
#: Evenly spaced frames sampled per video.
FRAMES = dict(min=1, max=10_000)
#: A TCP port.
PORT = dict(min=1, max=65535)
