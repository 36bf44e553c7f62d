-- 001: the core tables. Append-only: later changes go in new numbered files, never edits to this one.
-- Row keys are deterministic content hashes (see rlaif/engines/base.py:content_hash), so writes are idempotent
-- (INSERT OR IGNORE) and a rerun finds what an earlier run already stored.

-- One row per invocation of a flow or command that generates data.
CREATE TABLE runs (
    run_id               VARCHAR PRIMARY KEY,
    kind                 VARCHAR NOT NULL,      -- 'demo', 'sft', 'prefs', ...
    status               VARCHAR NOT NULL,      -- 'running' | 'completed' | 'partial' (some calls failed) | 'failed'
    params               JSON,                  -- the run's options, as given
    constitution_name    VARCHAR,
    constitution_version VARCHAR,
    engine               VARCHAR,
    model                VARCHAR,
    seed                 BIGINT,
    started_at           TIMESTAMP NOT NULL,
    finished_at          TIMESTAMP,
    prefect_flow_run_id  VARCHAR,
    error                VARCHAR
);

-- Every prompt ever seen, keyed by the hash of its conversation.
CREATE TABLE prompts (
    prompt_id  VARCHAR PRIMARY KEY,
    text       VARCHAR NOT NULL,                      -- the last user turn, for display and SQL
    messages   STRUCT(role VARCHAR, content VARCHAR)[] NOT NULL,  -- the whole conversation up to the reply
    source     VARCHAR,
    split      VARCHAR,                               -- 'train' | 'eval', deterministic by prompt_id
    created_at TIMESTAMP NOT NULL
);

-- One row per logical engine request that succeeded: a chat generation or a choice scoring.
-- Failed tries are not here; they are in attempts, so a rerun retries them.
CREATE TABLE generations (
    key                  VARCHAR PRIMARY KEY,   -- content_hash of (kind, input, params, model)
    run_id               VARCHAR NOT NULL,      -- the run that produced it
    kind                 VARCHAR NOT NULL,      -- 'chat' | 'choice'
    stage                VARCHAR NOT NULL,      -- 'respond' | 'critique' | 'revise' | 'judge' ...
    prompt_id            VARCHAR,
    messages             STRUCT(role VARCHAR, content VARCHAR)[],  -- chat input
    prompt_text          VARCHAR,               -- choice input (raw text, no chat template)
    params               JSON,                  -- sampling options, or the list of choices
    engine               VARCHAR NOT NULL,
    model                VARCHAR NOT NULL,
    output               VARCHAR,               -- chat output text
    choice_logprobs      JSON,                  -- choice output: {"A": -0.3, "B": -1.4}
    choice_method        VARCHAR,               -- 'logprobs' | 'structured'
    finish_reason        VARCHAR,
    prompt_tokens        INTEGER,
    completion_tokens    INTEGER,
    latency_s            DOUBLE,
    constitution_version VARCHAR,
    created_at           TIMESTAMP NOT NULL
);

-- Every try at every engine request, successful or not (retries included).
CREATE TABLE attempts (
    attempt_id VARCHAR PRIMARY KEY,
    key        VARCHAR NOT NULL,                -- generations.key of the logical request
    run_id     VARCHAR NOT NULL,
    stage      VARCHAR NOT NULL,
    number     INTEGER NOT NULL,                -- 1, 2, ... within this run
    status     VARCHAR NOT NULL,                -- 'ok' | 'failed'
    error      VARCHAR,
    latency_s  DOUBLE,
    started_at TIMESTAMP NOT NULL
);

-- Critique/revision chains (Bai et al. 2022, section 3): one row per round.
CREATE TABLE revisions (
    chain_id             VARCHAR NOT NULL,      -- content_hash(prompt, constitution version, model, seed)
    round                INTEGER NOT NULL,      -- 1..N
    run_id               VARCHAR NOT NULL,
    prompt_id            VARCHAR NOT NULL,
    principle_id         VARCHAR NOT NULL,
    original             VARCHAR NOT NULL,      -- the initial response (round 0)
    before               VARCHAR NOT NULL,      -- the text critiqued in this round
    critique             VARCHAR,
    revision             VARCHAR,
    response_key         VARCHAR,               -- generations.key of the initial response
    critique_key         VARCHAR,
    revision_key         VARCHAR,
    constitution_name    VARCHAR NOT NULL,
    constitution_version VARCHAR NOT NULL,
    model                VARCHAR NOT NULL,
    created_at           TIMESTAMP NOT NULL,
    PRIMARY KEY (chain_id, round)
);

-- AI-judge comparisons (Bai et al. 2022, section 4; Lee et al. 2023): one row per pair and principle,
-- judged in both orders. p_a is the probability that response_a is the better answer.
CREATE TABLE comparisons (
    comparison_id        VARCHAR PRIMARY KEY,   -- content_hash(pair_id, principle, judge model, constitution version)
    pair_id              VARCHAR NOT NULL,      -- content_hash(prompt_id, response_a, response_b)
    run_id               VARCHAR NOT NULL,
    prompt_id            VARCHAR NOT NULL,
    chain_id             VARCHAR,               -- set when the pair is (original, revision) of a chain
    principle_id         VARCHAR NOT NULL,
    response_a           VARCHAR NOT NULL,
    response_b           VARCHAR NOT NULL,
    source_a             VARCHAR,               -- e.g. 'original'
    source_b             VARCHAR,               -- e.g. 'revision'
    key_ab               VARCHAR,               -- generations.key with a shown as (A)
    key_ba               VARCHAR,               -- generations.key with a shown as (B)
    p_a_ab               DOUBLE,                -- P(a better) read with a in slot (A)
    p_a_ba               DOUBLE,                -- P(a better) read with a in slot (B)
    p_a                  DOUBLE,                -- the debiased mean of the two
    consistent           BOOLEAN,               -- both orders prefer the same response
    method               VARCHAR,               -- 'logprobs' | 'structured'
    judge_model          VARCHAR NOT NULL,
    constitution_name    VARCHAR NOT NULL,
    constitution_version VARCHAR NOT NULL,
    created_at           TIMESTAMP NOT NULL
);
