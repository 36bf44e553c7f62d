-- The SFT export (`rlaif export sft`): one row per critique/revision chain, read from the sft_dataset view.
-- TRL-ready: `messages` is the conversational format (the prompt's turns plus the final revision as the
-- assistant turn); `prompt`/`completion` is the prompt-completion format. A trainer picks one of the two with
-- `dataset.select_columns(...)`; the rest is lineage back to the run, constitution and model.
-- Not a migration (no NNN_ prefix): store.export_dataset wraps this query in COPY (...) TO.
SELECT
    messages,
    prompt,
    completion,
    prompt_id,
    run_id,
    constitution_name,
    constitution_version,
    model,
    split
FROM sft_dataset
ORDER BY prompt_id, chain_id
