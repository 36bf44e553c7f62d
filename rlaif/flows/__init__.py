"""``rlaif.flows``, the Prefect flows, in a source checkout: this package's modules are the files of the
repository's top-level ``flows/`` folder (the one home of Prefect decorators).

The wheel ships that folder itself here, as ``rlaif/flows/`` (pyproject.toml's force-include, which leaves this
file out), so an installed rlaif adds no generic top-level package named ``flows`` to site-packages, and
``import rlaif.flows.sl_cai`` works the same in a checkout, an editable install and the wheel.
"""

from pathlib import Path

_SOURCE = Path(__file__).resolve().parents[2] / "flows"
__path__ = [str(_SOURCE)]  # noqa: F821  (a package's module search path, set to the checkout's folder)
