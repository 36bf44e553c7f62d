-- The unpaired export in TRL's conversational unpaired-preference format (`rlaif export kto --format trl`), which
-- KTOTrainer reads: `prompt` is the prompt's turns (system included), `completion` one assistant turn, `label`
-- whether it is desirable. The labels are those of the raw format (export_kto.sql): true when the answer won more
-- of its judged pairs than it lost.
-- Filters: $run, $split, $consistent_only, $min_confidence (applied to the pairs before counting).
WITH pairs AS (
    SELECT *
    FROM preference_dataset
    WHERE ($run IS NULL OR run_id = $run) AND ($split IS NULL OR split = $split)
      AND (NOT $consistent_only OR coalesce(consistent, false)) AND ($min_confidence IS NULL OR confidence >= $min_confidence)
),
sides AS (
    SELECT prompt_id, prompt_messages, judge_model, constitution_version, mode, chosen AS completion, 1 AS won FROM pairs
    UNION ALL
    SELECT prompt_id, prompt_messages, judge_model, constitution_version, mode, rejected AS completion, 0 AS won FROM pairs
)
SELECT
    any_value(prompt_messages) AS prompt,
    [{'role': 'assistant', 'content': completion}] AS completion,
    sum(won) > count(*) - sum(won) AS label
FROM sides
GROUP BY prompt_id, judge_model, constitution_version, mode, completion
HAVING sum(won) <> count(*) - sum(won)
ORDER BY prompt_id, judge_model, constitution_version, mode, completion
