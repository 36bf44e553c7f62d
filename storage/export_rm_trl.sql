-- The reward-model export in the form TRL's RewardTrainer reads (`rlaif export rm --format trl`): `chosen` and
-- `rejected` are each the whole conversation, the prompt's turns (system included) then one assistant turn (TRL's
-- conversational preference format with an implicit prompt), so the trainer scores each conversation through the
-- chat template. `p_chosen` is the judge's soft label; nothing is called `margin`, which RewardTrainer would
-- subtract inside its loss.
-- Filters: $run, $split, $consistent_only, $min_confidence (NULL / false: no filter).
SELECT
    list_concat(prompt_messages, chosen_messages) AS chosen,
    list_concat(prompt_messages, rejected_messages) AS rejected,
    p_chosen
FROM preference_dataset
WHERE ($run IS NULL OR run_id = $run) AND ($split IS NULL OR split = $split)
  AND (NOT $consistent_only OR coalesce(consistent, false)) AND ($min_confidence IS NULL OR confidence >= $min_confidence)
ORDER BY prompt_id, pair_id, judge_model, constitution_version, mode
