-- The preference export (`rlaif export prefs`): one row per judged pair, read from the preference_dataset view.
-- TRL's standard preference format: `prompt`, `chosen`, `rejected` as strings. `p_chosen` is the judge's
-- debiased probability that `chosen` is better (averaged over principles, Lee et al. 2023 soft labels) and
-- `margin` = |2 p_a - 1|, for filtering or weighting; the rest is lineage.
-- Not a migration (no NNN_ prefix): store.export_dataset wraps this query in COPY (...) TO.
SELECT
    prompt,
    chosen,
    rejected,
    p_chosen,
    margin,
    prompt_id,
    pair_id,
    judge_model,
    constitution_version,
    run_id,
    split
FROM preference_dataset
ORDER BY prompt_id, pair_id, judge_model, constitution_version
