-- 002: the datasets users query. Views, so they always reflect the tables; later migrations may
-- CREATE OR REPLACE them, never drop columns users rely on.

-- The SFT dataset: per critique/revision chain, the final revision as the completion of its prompt.
CREATE OR REPLACE VIEW sft_dataset AS
WITH last_round AS (
    SELECT *, row_number() OVER (PARTITION BY chain_id ORDER BY round DESC) AS rn
    FROM revisions
    WHERE revision IS NOT NULL AND length(trim(revision)) > 0
)
SELECT
    l.prompt_id,
    p.text AS prompt,
    l.revision AS completion,
    list_concat(p.messages, [{'role': 'assistant', 'content': l.revision}]) AS messages,
    l.original,
    l.round AS rounds,
    l.chain_id,
    l.run_id,
    l.constitution_name,
    l.constitution_version,
    l.model,
    p.split
FROM last_round l
JOIN prompts p USING (prompt_id)
WHERE l.rn = 1;

-- The preference dataset: per pair, the judge's debiased preference averaged over the principles used.
-- Ties (p_a within 1e-9 of 0.5, allowing for float rounding) carry no preference and are left out.
CREATE OR REPLACE VIEW preference_dataset AS
WITH pairs AS (
    SELECT
        pair_id, judge_model, constitution_name, constitution_version,
        any_value(prompt_id) AS prompt_id,
        any_value(chain_id) AS chain_id,
        any_value(response_a) AS response_a,
        any_value(response_b) AS response_b,
        avg(p_a) AS p_a,
        bool_and(consistent) AS consistent,
        list(principle_id ORDER BY principle_id) AS principles,
        any_value(method) AS method,
        max(run_id) AS run_id
    FROM comparisons
    WHERE p_a IS NOT NULL
    GROUP BY pair_id, judge_model, constitution_name, constitution_version
)
SELECT
    x.prompt_id,
    p.text AS prompt,
    CASE WHEN x.p_a > 0.5 THEN x.response_a ELSE x.response_b END AS chosen,
    CASE WHEN x.p_a > 0.5 THEN x.response_b ELSE x.response_a END AS rejected,
    greatest(x.p_a, 1 - x.p_a) AS p_chosen,
    abs(2 * x.p_a - 1) AS margin,
    x.consistent,
    x.principles,
    x.method,
    x.judge_model,
    x.constitution_name,
    x.constitution_version,
    x.pair_id,
    x.chain_id,
    x.run_id,
    p.split
FROM pairs x
JOIN prompts p USING (prompt_id)
WHERE abs(x.p_a - 0.5) > 1e-9;
