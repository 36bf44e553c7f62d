"""Preference data: the RL-CAI phase's candidates and judgements, run like ``generate sft`` runs.

- ``work``: what a run judges, as a stream of jobs: prompts whose candidates the policy samples, the
  (original, final revision) pairs of an SL-CAI run, or the pairs of a file the user brings;
- ``pipeline``: schedules each job's chain (sample -> pair -> judge) over a bounded window, with canaries;
- ``runner``: validates a run, resumes or starts it, runs the pipeline, writes the pair flags, records the end.

Flows (``flows/rl_cai.py``) and the CLI call the runner; the stages own the requests, seeds and rows
(``rlaif.stages.sample``, ``rlaif.stages.judge``, ``rlaif.judge.rows``).
"""
