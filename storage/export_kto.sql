-- The unpaired (KTO, Ethayarajh et al. 2024) export, raw format (`rlaif export kto --format raw`). KTO learns from
-- single answers marked desirable or not. Each judged pair (preference_dataset, after the filters) is one win for
-- its chosen answer and one loss for its rejected one; per prompt, answer, judge model, constitution version and
-- judge mode, `label` is true when the answer won more of its pairs than it lost. Answers with as many wins as
-- losses carry no verdict and are left out. `wins` and `losses` show how each label came about.
-- Filters: $run, $split, $consistent_only, $min_confidence (applied to the pairs before counting).
WITH pairs AS (
    SELECT *
    FROM preference_dataset
    WHERE ($run IS NULL OR run_id = $run) AND ($split IS NULL OR split = $split)
      AND (NOT $consistent_only OR coalesce(consistent, false)) AND ($min_confidence IS NULL OR confidence >= $min_confidence)
),
sides AS (
    SELECT prompt_id, prompt, prompt_messages, judge_model, constitution_name, constitution_version, mode, run_id, split,
           chosen AS completion, 1 AS won
    FROM pairs
    UNION ALL
    SELECT prompt_id, prompt, prompt_messages, judge_model, constitution_name, constitution_version, mode, run_id, split,
           rejected AS completion, 0 AS won
    FROM pairs
)
SELECT
    any_value(prompt) AS prompt,
    completion,
    sum(won) > count(*) - sum(won) AS label,
    sum(won)::INTEGER AS wins,
    (count(*) - sum(won))::INTEGER AS losses,
    prompt_id,
    judge_model,
    constitution_name,
    constitution_version,
    mode,
    max(run_id) AS run_id,
    any_value(split) AS split,
    any_value(prompt_messages) AS prompt_messages
FROM sides
GROUP BY prompt_id, judge_model, constitution_name, constitution_version, mode, completion
HAVING sum(won) <> count(*) - sum(won)
ORDER BY prompt_id, judge_model, constitution_version, mode, completion
