"""The AI judge's machinery: prompts and defences, modes, verdict arithmetic, pairing, canaries, flags, evaluation.

``rlaif.stages.judge`` is the stage the flows call; the modules here are what it is made of. Importing this
package imports nothing heavy (no engine, no DuckDB).
"""
