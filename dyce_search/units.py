"""Cost units: how results, figures and tables name the unit of a cost profile (``Costs.unit``).

Every cost in a result is in one unit: C (Eq. 11, column ``rel_cost``) is a
share of the original model's cost in that unit, ``cost`` the mean cost per
sample in it. :data:`UNITS` is the one table that turns a unit into words;
a unit it does not list is shown verbatim (``cost (us)``), never as MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The unit of costs taken from a cache (``Costs.from_cache``): what results use by default.
DEFAULT_UNIT = "macs"


@dataclass(frozen=True)
class Unit:
    """Display names of one cost unit.

    Attributes
    ----------
    name : str
        As in ``Costs.unit`` and a result's ``unit`` column / ``cost_unit`` metadata.
    quantity : str
        What a relative cost is a share of, e.g. ``"MACs"``, ``"latency"``:
        Table II headers (``"latency at drop ≤ 2.0%"``) and ``relative``.
    label : str
        The quantity with its unit, e.g. ``"MACs"``, ``"latency (ms)"``.
    per_sample : str
        Absolute axis label, ``{prefix}`` standing for the scale's prefix.
    prefixes : tuple of (float, str)
        Scales for large values, largest first (e.g. ``(1e9, "G")``: GMACs).
    """

    name: str
    quantity: str
    label: str
    per_sample: str
    prefixes: tuple = ()

    @property
    def relative(self) -> str:
        """Axis label of C (Eq. 11), e.g. ``"relative latency"``."""
        return f"relative {self.quantity}"

    def scaled(self, largest: float) -> tuple[float, str]:
        """Divisor and absolute axis label that print values up to ``largest`` with a few digits.

        ``(1e9, "GMACs per sample")`` for ResNets in MACs, ``(1.0, "latency per sample (ms)")``.
        """
        for scale, prefix in self.prefixes:
            if largest >= scale:
                return scale, self.per_sample.format(prefix=prefix)
        return 1.0, self.per_sample.format(prefix="")


_SI = ((1e9, "G"), (1e6, "M"), (1e3, "k"))

#: Units with proper names; any other unit is shown verbatim by :func:`unit`.
UNITS = {
    "macs": Unit("macs", quantity="MACs", label="MACs", per_sample="{prefix}MACs per sample", prefixes=_SI),
    "ms": Unit("ms", quantity="latency", label="latency (ms)", per_sample="latency per sample (ms)"),
}


def unit(name: str) -> Unit:
    """The display names of cost unit ``name``; a unit missing from :data:`UNITS` keeps its own name.

    Raises
    ------
    ValueError
        If ``name`` is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a cost unit must be a non-empty string, got {name!r}")
    known = UNITS.get(name)
    if known is not None:
        return known
    # braces in a free-form unit must not be read as the {prefix} placeholder
    shown = name.replace("{", "{{").replace("}", "}}")
    return Unit(name, quantity=f"cost ({name})", label=f"cost ({name})", per_sample=f"cost per sample ({shown})")
