-- 004: `rlaif generate sft`: engine roles on the rows, the first answers, skipped input, and the SFT views.
-- Append-only: new columns go at the end of their tables, views keep every column users already select.

-- Runs record both roles and what identifies their configuration (rlaif/runs.py). `engine` and `model` (001)
-- are the policy's.
ALTER TABLE runs ADD COLUMN config_hash VARCHAR;      -- hash of everything that determines the outputs
ALTER TABLE runs ADD COLUMN source VARCHAR;           -- the prompt source's identity (absolute path or query)
ALTER TABLE runs ADD COLUMN feedback_engine VARCHAR;
ALTER TABLE runs ADD COLUMN feedback_model VARCHAR;

-- `model` (001) is the feedback model that critiqued and revised; this is the policy that wrote `original`.
ALTER TABLE revisions ADD COLUMN policy_model VARCHAR;

-- The policy's first answer of each chain. Helpful prompts stop here: their answer is their SFT completion,
-- unrevised, as the paper mixes helpfulness samples into its SFT data.
CREATE TABLE responses (
    chain_id             VARCHAR PRIMARY KEY,   -- content_hash(prompt_id, config_hash)
    run_id               VARCHAR NOT NULL,
    prompt_id            VARCHAR NOT NULL,
    response_key         VARCHAR NOT NULL,      -- generations.key of the answer
    response             VARCHAR,               -- NULL when the model returned nothing (flagged 'empty')
    helpful              BOOLEAN NOT NULL,      -- kept unrevised
    rounds               INTEGER NOT NULL,      -- critique/revision rounds the chain is to get (0 when helpful)
    context              VARCHAR,               -- 'transcript' | 'fresh'
    finish_reason        VARCHAR,
    model                VARCHAR NOT NULL,      -- the policy model
    config_hash          VARCHAR NOT NULL,
    constitution_name    VARCHAR NOT NULL,
    constitution_version VARCHAR NOT NULL,
    created_at           TIMESTAMP NOT NULL
);

-- Source rows that could not be read, kept with their reason (`--skip-bad-rows`).
CREATE TABLE bad_rows (
    run_id      VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    row_number  BIGINT NOT NULL,                -- 1-based, as the user counts (JSONL line, CSV data row, ...)
    column_name VARCHAR,
    reason      VARCHAR NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, source, row_number)
);

-- Prompts a run could not process because a request would not fit the model's context: the prompt itself
-- (stage 'respond'), or a transcript that grew too long in a later round ('critique' / 'revise').
CREATE TABLE skipped_prompts (
    run_id         VARCHAR NOT NULL,
    prompt_id      VARCHAR NOT NULL,
    stage          VARCHAR NOT NULL,
    round          INTEGER,                     -- the round that would not fit (NULL for 'respond')
    reason         VARCHAR NOT NULL,
    tokens         INTEGER,                     -- prompt tokens counted, when the engine has a tokenizer
    context_length INTEGER,
    created_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, prompt_id)
);

-- Every SFT candidate with its flags: each round's revision (target 'revision', target_id 'chain_id:round')
-- and each helpful answer (target 'response', target_id chain_id). `final` marks the revision of a chain's
-- last asked-for round; chains written before 004 (no responses row) take their last non-empty revision.
CREATE OR REPLACE VIEW sft_candidates AS
WITH flags AS (
    SELECT target, target_id, list(flag ORDER BY flag) AS flags
    FROM row_flags
    WHERE target IN ('revision', 'response')
    GROUP BY target, target_id
),
revised AS (
    SELECT
        v.prompt_id, v.revision AS completion, v.original, v.round, v.chain_id, v.run_id,
        v.constitution_name, v.constitution_version, v.model, coalesce(v.policy_model, v.model) AS policy_model,
        false AS helpful, v.principle_id, v.critique, v.before,
        CASE WHEN r.rounds IS NOT NULL THEN v.round = r.rounds
             ELSE v.round = max(v.round) FILTER (WHERE v.revision IS NOT NULL AND length(trim(v.revision)) > 0)
                                OVER (PARTITION BY v.chain_id)
        END AS final,
        'revision' AS target, v.chain_id || ':' || v.round AS target_id
    FROM revisions v
    LEFT JOIN responses r USING (chain_id)
),
kept AS (
    SELECT
        prompt_id, response AS completion, response AS original, 0 AS round, chain_id, run_id,
        constitution_name, constitution_version, model, model AS policy_model,
        true AS helpful, NULL::VARCHAR AS principle_id, NULL::VARCHAR AS critique, NULL::VARCHAR AS before,
        true AS final, 'response' AS target, chain_id AS target_id
    FROM responses
    WHERE helpful
)
SELECT
    c.prompt_id,
    p.text AS prompt,
    c.completion,
    list_concat(p.messages, [{'role': 'assistant', 'content': c.completion}]) AS messages,
    c.original,
    c.round,
    c.final,
    c.helpful,
    coalesce(f.flags, []) AS flags,
    c.principle_id,
    c.critique,
    c.before,
    c.chain_id,
    c.run_id,
    c.constitution_name,
    c.constitution_version,
    c.model,
    c.policy_model,
    c.target,
    c.target_id,
    p.split
FROM (SELECT * FROM revised UNION ALL SELECT * FROM kept) c
JOIN prompts p USING (prompt_id)
LEFT JOIN flags f ON f.target = c.target AND f.target_id = c.target_id;

-- The SFT dataset: per chain, the final revision (or a helpful prompt's answer) as the completion, flagged and
-- empty rows left out. The columns of 002 first, then the roles' models and the helpful mark.
CREATE OR REPLACE VIEW sft_dataset AS
SELECT
    prompt_id, prompt, completion, messages, original, round AS rounds, chain_id, run_id, constitution_name,
    constitution_version, model, split, policy_model, helpful
FROM sft_candidates
WHERE final AND len(flags) = 0 AND completion IS NOT NULL AND length(trim(completion)) > 0;

-- Every round's revision (the paper fine-tuned on revisions 1-4), flagged and empty rows left out.
CREATE OR REPLACE VIEW sft_rounds AS
SELECT
    prompt_id, prompt, completion, messages, original, round, final, principle_id, critique, before, chain_id,
    run_id, constitution_name, constitution_version, model, policy_model, split
FROM sft_candidates
WHERE NOT helpful AND len(flags) = 0 AND completion IS NOT NULL AND length(trim(completion)) > 0;
