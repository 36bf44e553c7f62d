-- The preference export in TRL's conversational preference format (`rlaif export prefs --format trl`), which
-- DPOTrainer reads: `prompt` is the prompt's turns (system included), `chosen` and `rejected` are one assistant
-- turn each, so the trainer applies the chat template to prompt + answer. `p_chosen` is the judge's soft label
-- under its own name (NULL for pairs decided by votes); TRL leaves columns it does not know alone.
-- Filters: $run, $split, $consistent_only, $min_confidence (NULL / false: no filter).
SELECT
    prompt_messages AS prompt,
    chosen_messages AS chosen,
    rejected_messages AS rejected,
    p_chosen
FROM preference_dataset
WHERE ($run IS NULL OR run_id = $run) AND ($split IS NULL OR split = $split)
  AND (NOT $consistent_only OR coalesce(consistent, false)) AND ($min_confidence IS NULL OR confidence >= $min_confidence)
ORDER BY prompt_id, pair_id, judge_model, constitution_version, mode
