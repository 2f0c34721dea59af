"""The Feast feature store: CRM export, definitions, training sets, materialization, online reads.

Feast decorates its classes with typeguard's ``@typechecked``, which re-parses and recompiles each
decorated module's source when it is imported: about three quarters of ``import feast`` (11 s →
3 s on this machine), paid by every CLI call, service start and test process. Typeguard makes the
decorator a no-op under ``python -O`` (its checks "aren't meant to be run in production"); this
does the same before Feast is imported, without turning off assertions everywhere.
"""

import sys

if "feast" not in sys.modules:
    import typeguard

    def _unchecked(target=None, **_options):
        return target if target is not None else _unchecked

    typeguard.typechecked = _unchecked
