-- The preference export, raw format (`rlaif export prefs --format raw`, also `rm --format raw`): one row per
-- judgement, read from the preference_dataset view. `prompt`, `chosen`, `rejected` are strings; `p_chosen` is the
-- judge's debiased probability that `chosen` is better (averaged over principles, Lee et al. 2023 soft labels),
-- NULL for pairs decided by votes (`vote_chosen`, the share of votes for `chosen`); `confidence` is
-- |2 p_chosen - 1| (or |2 vote_chosen - 1|). The view calls that number `margin` too, but no export does: TRL's
-- RewardTrainer subtracts a column named `margin` inside its loss. The rest is lineage.
-- Filters: $run, $split, $consistent_only (both orders agreed), $min_confidence (NULL / false: no filter).
SELECT
    prompt,
    chosen,
    rejected,
    p_chosen,
    confidence,
    prompt_id,
    pair_id,
    judge_model,
    constitution_version,
    run_id,
    split,
    vote_chosen,
    consistent,
    mode,
    constitution_name
FROM preference_dataset
WHERE ($run IS NULL OR run_id = $run) AND ($split IS NULL OR split = $split)
  AND (NOT $consistent_only OR coalesce(consistent, false)) AND ($min_confidence IS NULL OR confidence >= $min_confidence)
ORDER BY prompt_id, pair_id, judge_model, constitution_version, mode
