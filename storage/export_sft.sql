-- The SFT export, raw format (`rlaif export sft --format raw`): one row per critique/revision chain, read from the
-- sft_dataset view, with its lineage back to the run, constitution and model. `messages` is the conversation
-- (every prompt turn, system included, then the final revision); `prompt` (the last user turn) and `completion`
-- are there for reading, not training: a trainer given both forms may pick the prompt-completion one and lose
-- the chat template and the earlier turns. The trl format (export_sft_trl.sql) has `messages` alone.
-- Not a migration (no NNN_ prefix): rlaif/exports wraps this query in COPY (...) TO, binding the filters
-- $run and $split (NULL: no filter).
SELECT
    messages,
    prompt,
    completion,
    prompt_id,
    run_id,
    constitution_name,
    constitution_version,
    model,
    split,
    policy_model,
    helpful
FROM sft_dataset
WHERE ($run IS NULL OR run_id = $run) AND ($split IS NULL OR split = $split)
ORDER BY prompt_id, chain_id
