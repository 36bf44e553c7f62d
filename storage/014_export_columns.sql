-- 014: the preference dataset under names that trainers do not misread, and a label for pairs decided by votes.
-- `margin` (|2 p_chosen - 1|) has the name of the optional column TRL's RewardTrainer subtracts inside its loss, so
-- a file carrying it changes that trainer's objective. The view keeps `margin` for queries written before 014 and
-- adds the same number as `confidence`, which is what the exports carry. `confidence` also covers pairs decided by
-- votes (engines without log-probs): |2 v - 1| for the share v of votes for the chosen answer, which is
-- `vote_chosen`. `p_chosen` stays NULL for them: a vote share is not a probability the judge gave.
CREATE OR REPLACE VIEW preference_dataset AS
WITH decided AS (
    SELECT *, decision > 0.5 AS a_wins
    FROM preference_candidates
    WHERE NOT flagged AND decision IS NOT NULL AND abs(decision - 0.5) > 1e-9 AND prompt IS NOT NULL
)
SELECT
    prompt_id,
    prompt,
    CASE WHEN a_wins THEN response_a ELSE response_b END AS chosen,
    CASE WHEN a_wins THEN response_b ELSE response_a END AS rejected,
    greatest(p_a, 1 - p_a) AS p_chosen,
    abs(2 * p_a - 1) AS margin,
    consistent,
    principles,
    method,
    judge_model,
    constitution_name,
    constitution_version,
    pair_id,
    chain_id,
    run_id,
    split,
    prompt_messages,
    [{'role': 'assistant', 'content': CASE WHEN a_wins THEN response_a ELSE response_b END}] AS chosen_messages,
    [{'role': 'assistant', 'content': CASE WHEN a_wins THEN response_b ELSE response_a END}] AS rejected_messages,
    consistency,
    order_gap,
    mode,
    judge_engine,
    policy_model,
    CASE WHEN a_wins THEN source_a ELSE source_b END AS source_chosen,
    CASE WHEN a_wins THEN source_b ELSE source_a END AS source_rejected,
    len(principles) AS n_principles,
    judgement_id,
    -- 014
    abs(2 * decision - 1) AS confidence,
    CASE WHEN p_a IS NULL THEN greatest(vote_a, 1 - vote_a) END AS vote_chosen
FROM decided;
