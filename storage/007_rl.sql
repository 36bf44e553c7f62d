-- 007: RL with the policy in the loop (rlaif/train/rl*.py, best_of_n.py, overopt.py, rlaif/iterate.py).
-- A rollout is a `generations` row (kind 'chat', stage 'rollout', run_id = the training run, model = the weights
-- that sampled it, "<train run>@<step>"); the tables here hold what RL adds to it: its place in the run, its
-- rewards from every source, and the monitor's and the closed loop's records. Keys are content hashes or
-- (run, step) pairs, and rows go in with INSERT OR IGNORE, like everywhere else.

-- One row per rollout of an RL run: its place (step, prompt, sample in the group) and what the trainer made of it.
CREATE TABLE rl_rollouts (
    key              VARCHAR PRIMARY KEY,   -- generations.key of the rollout
    run_id           VARCHAR NOT NULL,      -- train_runs.run_id
    step             INTEGER NOT NULL,      -- the update it fed (1-based)
    prompt_id        VARCHAR NOT NULL,
    sample           INTEGER NOT NULL,      -- 0..K-1 within its prompt's group
    response_tokens  INTEGER NOT NULL,      -- EOS included when emitted
    ended            BOOLEAN NOT NULL,      -- it emitted EOS (else it was cut at the token limit)
    score            DOUBLE NOT NULL,       -- the weighted sum of its rewards (rollout_rewards)
    penalised_score  DOUBLE NOT NULL,       -- after the no-EOS penalty: what the estimator saw
    kl               DOUBLE NOT NULL,       -- sum over its tokens of log pi_old - log pi_ref (k1)
    advantage        DOUBLE,                -- group-relative: its advantage; PPO: the mean of its token advantages
    created_at       TIMESTAMP NOT NULL
);

-- Every reward of every scored response, one row per source: RL rollouts and best-of-N candidates alike.
CREATE TABLE rollout_rewards (
    key        VARCHAR NOT NULL,            -- generations.key of the scored response
    source     VARCHAR NOT NULL,            -- 'rm:<reward model id>' | 'judge:<model>' | 'rule:<module>:<function>'
    value      DOUBLE,                      -- the source's reward; NULL when it could not score (see detail)
    weight     DOUBLE NOT NULL,             -- its weight in the combined reward
    detail     VARCHAR,                     -- why a value is NULL, or what the value is (e.g. 'normalised')
    run_id     VARCHAR NOT NULL,            -- the run that scored it
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (key, source)
);

-- The over-optimisation monitor: one row per measurement on held-out prompts (step 0 = before training).
CREATE TABLE overopt_records (
    run_id        VARCHAR NOT NULL,
    step          INTEGER NOT NULL,
    prompts       INTEGER NOT NULL,         -- held-out prompts measured
    kl            DOUBLE,                   -- mean sequence KL (k1) of the policy's answers to the reference
    mean_length   DOUBLE,                   -- mean answer length, tokens
    length_drift  DOUBLE,                   -- mean_length / the step-0 mean_length
    proxy_score   DOUBLE,                   -- mean reward of the optimised reward (the proxy)
    judge_score   DOUBLE,                   -- mean reward of the judge (d-RLAIF 1-10 score mapped onto [-1, 1])
    proxy_source  VARCHAR,
    judge_model   VARCHAR,
    created_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- Warnings of the monitor: the proxy rose while the judge fell, measured from the reference step to this one.
CREATE TABLE overopt_warnings (
    run_id       VARCHAR NOT NULL,
    step         INTEGER NOT NULL,
    kind         VARCHAR NOT NULL,          -- 'proxy_up_judge_down'
    since_step   INTEGER NOT NULL,          -- the record it compares with (the judge's best so far)
    proxy_delta  DOUBLE NOT NULL,
    judge_delta  DOUBLE NOT NULL,
    message      VARCHAR NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, step, kind)
);

-- Best-of-N: per prompt, the highest-reward answer of N samples from the policy (its candidates' rewards are
-- in rollout_rewards, their texts in generations).
CREATE TABLE best_of_n (
    selection_id   VARCHAR PRIMARY KEY,     -- content_hash(prompt, n, reward source, policy model, seed, sampling)
    run_id         VARCHAR NOT NULL,        -- runs.run_id (kind 'best-of-n')
    prompt_id      VARCHAR NOT NULL,
    n              INTEGER NOT NULL,        -- candidates sampled
    scored         INTEGER NOT NULL,        -- candidates the reward could score
    chosen_key     VARCHAR NOT NULL,        -- generations.key of the winner
    chosen         VARCHAR NOT NULL,
    reward         DOUBLE NOT NULL,         -- the winner's combined reward
    reward_mean    DOUBLE NOT NULL,         -- over the scored candidates: what best-of-N gains over one sample
    reward_source  VARCHAR NOT NULL,        -- the reward spec, e.g. 'rm:runs/rm/final' or 'judge'
    candidate_keys VARCHAR[] NOT NULL,
    policy_model   VARCHAR NOT NULL,
    seed           BIGINT NOT NULL,
    created_at     TIMESTAMP NOT NULL
);

-- Best-of-N answers as SFT rows: sft_dataset's columns in its order, so
--   SELECT * FROM sft_dataset UNION ALL BY NAME SELECT * FROM best_of_n_sft
-- gives one SFT set; the lineage follows at the end. chain_id holds the selection id, rounds is 0 (no revision).
CREATE VIEW best_of_n_sft AS
SELECT
    b.prompt_id,
    p.text AS prompt,
    b.chosen AS completion,
    list_concat(p.messages, [{'role': 'assistant', 'content': b.chosen}]) AS messages,
    CAST(NULL AS VARCHAR) AS original,
    0 AS rounds,
    b.selection_id AS chain_id,
    b.run_id,
    CAST(NULL AS VARCHAR) AS constitution_name,
    CAST(NULL AS VARCHAR) AS constitution_version,
    b.policy_model AS model,
    p.split,
    'best-of-n' AS source,
    b.n,
    b.reward,
    b.reward_mean,
    b.reward_source,
    b.chosen_key
FROM best_of_n b
JOIN prompts p USING (prompt_id);

-- The closed loop (`rlaif iterate`): one row per loop, per iteration, and per step of an iteration.
CREATE TABLE iterate_loops (
    loop_id     VARCHAR PRIMARY KEY,        -- content_hash of the loop's options and base policy
    base_model  VARCHAR NOT NULL,
    iterations  INTEGER NOT NULL,           -- planned (a rerun may raise it and go on)
    config      JSON NOT NULL,
    out_dir     VARCHAR NOT NULL,
    status      VARCHAR NOT NULL,           -- 'running' | 'completed' | 'failed'
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    error       VARCHAR
);

CREATE TABLE iterations (
    loop_id              VARCHAR NOT NULL,
    iteration            INTEGER NOT NULL,  -- 1..N
    policy_before        VARCHAR NOT NULL,  -- the policy that generated this iteration's data
    policy_after         VARCHAR,           -- the model folder trained in it
    trainer              VARCHAR NOT NULL,  -- 'dpo' | 'ppo' | 'grpo'
    generate_run_id      VARCHAR,           -- runs.run_id of its generation
    train_run_id         VARCHAR,           -- train_runs.run_id
    win_rate_vs_previous DOUBLE,            -- the new policy against policy_before
    win_rate_vs_base     DOUBLE,            -- the new policy against the loop's base model
    eval_previous_id     VARCHAR,           -- winrate_evals.eval_id
    eval_base_id         VARCHAR,
    status               VARCHAR NOT NULL,  -- 'running' | 'completed'
    started_at           TIMESTAMP NOT NULL,
    finished_at          TIMESTAMP,
    PRIMARY KEY (loop_id, iteration)
);

CREATE TABLE iteration_steps (
    loop_id     VARCHAR NOT NULL,
    iteration   INTEGER NOT NULL,
    step        VARCHAR NOT NULL,           -- 'generate' | 'train' | 'evaluate'
    status      VARCHAR NOT NULL,           -- 'running' | 'completed' | 'failed'
    output      JSON,                       -- what later steps read: run ids, folders, figures
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    error       VARCHAR,
    PRIMARY KEY (loop_id, iteration, step)
);

-- Win-rate evaluations (006's winrate_evals) side by side by method: a trained policy shows its training run's
-- kind ('dpo', 'ppo', 'grpo', 'rloo', 'sft'), a best-of-N baseline (policy 'best-of-n:N:<reward>:<model>') shows
-- 'best-of-n', anything else 'model'.
CREATE VIEW policy_comparison AS
SELECT
    CASE WHEN e.policy LIKE 'best-of-n:%' THEN 'best-of-n' ELSE coalesce(t.kind, 'model') END AS method,
    e.policy,
    e.base,
    e.prompts,
    e.win_rate,
    e.win_rate_low,
    e.win_rate_high,
    e.lc_win_rate,
    e.judge_model,
    e.eval_id,
    t.run_id AS train_run_id,
    e.created_at
FROM winrate_evals e
LEFT JOIN train_runs t ON t.final_path = e.policy;
