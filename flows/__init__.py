"""Prefect flows that compose ``rlaif`` stages: the only place Prefect decorators live.

Imported as ``rlaif.flows`` (``import rlaif.flows.sl_cai``): the wheel ships this folder as ``rlaif/flows/``, and
in a checkout ``rlaif/flows/__init__.py`` points that package here. The CLI imports it only inside the commands
that run a flow, so ``rlaif --help`` never imports Prefect.
"""
