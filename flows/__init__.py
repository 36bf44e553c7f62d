"""Prefect flows that compose ``rlaif`` stages: the only place Prefect decorators live.

An importable package (``import flows.sl_cai``), shipped in the wheel next to ``rlaif``; the CLI imports it only
inside the commands that run a flow, so ``rlaif --help`` never imports Prefect.
"""
