-- 005: the judge at full depth (issue 9). Verdicts of every mode, with what each order said, the rationale of
-- chain-of-thought judging and the raw output of answers that could not be read; canary checks; judge
-- evaluations; engine scoring rows; and the preference views rebuilt on top.
-- Juries: a pair may hold verdicts from several judge models (and modes); each (pair, judge model, constitution
-- version, mode) is one "judgement", the unit the preference views and the verdict flags are about.

-- comparisons: one row per (pair, principle, judge model, constitution version, mode, judge options).
-- Since 005, response_a/response_b are the pair's canonical order (by text): pair_id does not depend on the order
-- a pair arrived in, and p_* are always about response_a. Rows from before 005 have mode/status NULL ('choice',
-- 'ok').
ALTER TABLE comparisons ADD COLUMN mode VARCHAR;            -- 'choice' | 'cot' | 'score' | 'contrast'
ALTER TABLE comparisons ADD COLUMN status VARCHAR;          -- 'ok' | 'parse_failed' (numbers NULL, raw_output kept)
ALTER TABLE comparisons ADD COLUMN order_gap DOUBLE;        -- |p_a_ab - p_a_ba|: this pair's position bias
ALTER TABLE comparisons ADD COLUMN vote_a DOUBLE;           -- engines without log-probs: share of orders picking a
ALTER TABLE comparisons ADD COLUMN score_a DOUBLE;          -- score: E[1-10 rating]; contrast: PMI, nats/token
ALTER TABLE comparisons ADD COLUMN score_b DOUBLE;
ALTER TABLE comparisons ADD COLUMN rationale_ab VARCHAR;    -- cot: the rationale with a shown first
ALTER TABLE comparisons ADD COLUMN rationale_ba VARCHAR;
ALTER TABLE comparisons ADD COLUMN raw_output VARCHAR;      -- parse failures: what the engine said
ALTER TABLE comparisons ADD COLUMN judge_keys JSON;         -- every generations key of the verdict, by role
ALTER TABLE comparisons ADD COLUMN judge_engine VARCHAR;    -- 'transformers' | 'openai' | 'vllm' | 'fake'
ALTER TABLE comparisons ADD COLUMN judge_config JSON;       -- the judge options (rlaif.judge.config.JudgeConfig)
ALTER TABLE comparisons ADD COLUMN policy_model VARCHAR;    -- the model that wrote the responses, when known
ALTER TABLE comparisons ADD COLUMN response_key_a VARCHAR;  -- generations.key that produced response_a
ALTER TABLE comparisons ADD COLUMN response_key_b VARCHAR;

-- generations: kind 'score' rows (a continuation's log-likelihood given a chat conversation, engine.score).
ALTER TABLE generations ADD COLUMN continuation VARCHAR;    -- the scored text; messages holds the conversation
ALTER TABLE generations ADD COLUMN token_logprobs DOUBLE[];  -- one log-prob per continuation token

-- Canary pairs (rlaif/data/judge_canaries.jsonl): a known answer judged at the start of every run and once per
-- few hundred pairs, so that a broken judge shows in SQL. Kept out of comparisons and the datasets.
CREATE TABLE canary_results (
    canary_result_id     VARCHAR PRIMARY KEY,   -- content_hash(run_id, seq, principle, mode)
    run_id               VARCHAR NOT NULL,
    seq                  INTEGER NOT NULL,      -- the run's n-th canary check, from 0
    canary_id            VARCHAR NOT NULL,
    pair_id              VARCHAR NOT NULL,
    principle_id         VARCHAR NOT NULL,
    mode                 VARCHAR NOT NULL,
    method               VARCHAR,
    status               VARCHAR NOT NULL,      -- 'ok' | 'parse_failed'
    p_correct            DOUBLE,                -- P(the known-better response is better)
    vote_correct         DOUBLE,                -- engines without log-probs
    correct              BOOLEAN,               -- the judge preferred the known-better response (NULL: unreadable)
    consistent           BOOLEAN,
    order_gap            DOUBLE,
    raw_output           VARCHAR,
    judge_keys           JSON,
    judge_engine         VARCHAR,
    judge_model          VARCHAR NOT NULL,
    constitution_version VARCHAR NOT NULL,
    created_at           TIMESTAMP NOT NULL
);

-- `rlaif judge eval`: one row per eval run and mode. Each metric has its 95% interval (_lo, _hi): Wilson for
-- proportions, a seeded percentile bootstrap for brier and ece (docs/judge.md).
CREATE TABLE judge_evals (
    eval_id                      VARCHAR PRIMARY KEY,   -- content_hash(run_id, mode)
    run_id                       VARCHAR NOT NULL,
    mode                         VARCHAR NOT NULL,
    pairs_source                 VARCHAR,
    judge_engine                 VARCHAR,
    judge_model                  VARCHAR NOT NULL,
    constitution_name            VARCHAR,
    constitution_version         VARCHAR,
    principles                   INTEGER,
    judge_config                 JSON,
    pairs                        INTEGER NOT NULL,
    decided                      INTEGER NOT NULL,      -- pairs with a probability or a vote
    failed                       INTEGER NOT NULL,      -- engine failures and unreadable answers
    agreement DOUBLE, agreement_lo DOUBLE, agreement_hi DOUBLE,                      -- debiased, vs the labels
    agreement_first DOUBLE, agreement_first_lo DOUBLE, agreement_first_hi DOUBLE,    -- response_a shown first only
    agreement_second DOUBLE, agreement_second_lo DOUBLE, agreement_second_hi DOUBLE, -- response_a shown second only
    consistency DOUBLE, consistency_lo DOUBLE, consistency_hi DOUBLE,                -- both orders agree
    first_slot_rate DOUBLE, first_slot_rate_lo DOUBLE, first_slot_rate_hi DOUBLE,    -- readings picking slot (A)
    brier DOUBLE, brier_lo DOUBLE, brier_hi DOUBLE,
    ece DOUBLE, ece_lo DOUBLE, ece_hi DOUBLE,                                        -- 10 equal-width bins of p
    longer DOUBLE, longer_lo DOUBLE, longer_hi DOUBLE,                               -- baseline: the longer wins
    shorter DOUBLE, shorter_lo DOUBLE, shorter_hi DOUBLE,                            -- baseline: the shorter wins
    when_label_longer DOUBLE, when_label_longer_lo DOUBLE, when_label_longer_hi DOUBLE,
    pairs_label_longer           INTEGER,
    when_label_shorter DOUBLE, when_label_shorter_lo DOUBLE, when_label_shorter_hi DOUBLE,
    pairs_label_shorter          INTEGER,
    seconds                      DOUBLE,
    created_at                   TIMESTAMP NOT NULL
);

-- `rlaif judge eval`, per pair: what the judge said about each labelled pair, in the file's slot order.
CREATE TABLE judge_eval_pairs (
    run_id      VARCHAR NOT NULL,
    mode        VARCHAR NOT NULL,
    row         INTEGER NOT NULL,      -- the pair's row in its file (1-based)
    pair_id     VARCHAR NOT NULL,
    label       VARCHAR,               -- 'A' | 'B': which of response_a / response_b is the better
    p_a         DOUBLE,                -- P(response_a better), over both orders and the principle ensemble
    p_first     DOUBLE,                -- read with response_a in slot (A) only
    p_second    DOUBLE,                -- read with response_a in slot (B) only
    vote_a      DOUBLE,
    method      VARCHAR,
    status      VARCHAR NOT NULL,      -- 'ok' | 'parse_failed' | 'failed'
    consistent  BOOLEAN,
    correct     DOUBLE,                -- 1 agrees with the label, 0 disagrees, 0.5 a tie, NULL undecided
    len_a       INTEGER,
    len_b       INTEGER,
    raw_output  VARCHAR,
    judge_keys  JSON,
    created_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, mode, row)
);

-- One row per judgement: a pair's verdicts from one judge model, constitution version and mode, averaged over
-- the principles of its ensemble. `decision` is what the preference follows: the mean probability that
-- response_a is better, or (engines without log-probs) the mean vote. Rows written in the caller's order (by
-- code from before 005) are turned to the canonical order first, so every row of a pair is about the same a.
CREATE OR REPLACE VIEW preference_judgements AS
WITH oriented AS (
    SELECT
        pair_id, prompt_id, chain_id, principle_id, method, status, judge_model, judge_engine, policy_model,
        constitution_name, constitution_version, run_id, consistent,
        coalesce(mode, 'choice') AS mode,
        least(response_a, response_b) AS response_a,
        greatest(response_a, response_b) AS response_b,
        CASE WHEN response_a > response_b THEN source_b ELSE source_a END AS source_a,
        CASE WHEN response_a > response_b THEN source_a ELSE source_b END AS source_b,
        CASE WHEN response_a > response_b THEN 1 - p_a ELSE p_a END AS p_a,
        CASE WHEN response_a > response_b THEN 1 - vote_a ELSE vote_a END AS vote_a,
        CASE WHEN response_a > response_b THEN score_b ELSE score_a END AS score_a,
        CASE WHEN response_a > response_b THEN score_a ELSE score_b END AS score_b,
        coalesce(order_gap, abs(p_a_ab - p_a_ba)) AS order_gap
    FROM comparisons
)
SELECT
    md5(concat_ws('|', pair_id, judge_model, constitution_version, mode)) AS judgement_id,
    pair_id,
    any_value(prompt_id) AS prompt_id,
    any_value(chain_id) AS chain_id,
    any_value(response_a) AS response_a,
    any_value(response_b) AS response_b,
    any_value(source_a) AS source_a,
    any_value(source_b) AS source_b,
    mode,
    any_value(method) FILTER (WHERE coalesce(status, 'ok') = 'ok') AS method,
    judge_model,
    any_value(judge_engine) AS judge_engine,
    any_value(policy_model) AS policy_model,
    constitution_name,
    constitution_version,
    avg(p_a) AS p_a,
    avg(vote_a) AS vote_a,
    coalesce(avg(p_a), avg(vote_a)) AS decision,
    bool_and(consistent) AS consistent,
    avg(CASE WHEN consistent THEN 1.0 WHEN NOT consistent THEN 0.0 END) AS consistency,
    avg(order_gap) AS order_gap,
    avg(score_a) AS score_a,
    avg(score_b) AS score_b,
    coalesce(list(principle_id ORDER BY principle_id) FILTER (WHERE p_a IS NOT NULL OR vote_a IS NOT NULL),
             []) AS principles,
    count(*) FILTER (WHERE status = 'parse_failed') AS parse_failures,
    max(run_id) AS run_id
FROM oriented
GROUP BY pair_id, judge_model, constitution_name, constitution_version, mode;

-- Every judgement with its flags (row_flags, target 'pair': flags about the two texts use the pair_id, flags
-- about one judge's verdict the judgement_id). Nothing is left out here.
CREATE OR REPLACE VIEW preference_candidates AS
WITH flag_lists AS (
    SELECT target_id, list(flag ORDER BY flag) AS flags FROM row_flags WHERE target = 'pair' GROUP BY target_id
)
SELECT
    j.judgement_id,
    j.pair_id,
    j.prompt_id,
    p.text AS prompt,
    p.messages AS prompt_messages,
    j.response_a,
    j.response_b,
    j.source_a,
    j.source_b,
    j.mode,
    j.method,
    j.judge_model,
    j.judge_engine,
    j.policy_model,
    j.constitution_name,
    j.constitution_version,
    j.p_a,
    j.vote_a,
    j.decision,
    j.consistent,
    j.consistency,
    j.order_gap,
    j.score_a,
    j.score_b,
    j.principles,
    j.parse_failures,
    j.chain_id,
    j.run_id,
    p.split,
    list_sort(list_concat(coalesce(fp.flags, []), coalesce(fj.flags, []))) AS flags,
    (fp.flags IS NOT NULL OR fj.flags IS NOT NULL) AS flagged
FROM preference_judgements j
LEFT JOIN prompts p ON p.prompt_id = j.prompt_id
LEFT JOIN flag_lists fp ON fp.target_id = j.pair_id
LEFT JOIN flag_lists fj ON fj.target_id = j.judgement_id;

-- The preference dataset: judgements with a decision, no tie and no flag. The columns of 002 come first and mean
-- what they meant (p_chosen and margin are NULL for votes: an engine without log-probs gives no probability);
-- then TRL's conversational format under new names (prompt_messages, chosen_messages, rejected_messages) and the
-- lineage.
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
    judgement_id
FROM decided;
