-- 006: training on the datasets (rlaif/train/). A training run is a row; its per-step metrics, its checkpoints,
-- the reward-model scores it produces and the win-rate evaluations of its result are rows beside it, so every
-- question about a run is one SQL query. Writes are idempotent like everywhere else: keys are content hashes or
-- (run, step) pairs, and rows go in with INSERT OR IGNORE.

-- One row per training run. run_id = content_hash(kind, config without its length options, data version, base
-- model, output folder), so the same command run again finds its row and resumes instead of starting over.
CREATE TABLE train_runs (
    run_id              VARCHAR PRIMARY KEY,
    kind                VARCHAR NOT NULL,      -- 'sft' | 'rm' | 'dpo' (the RL trainers add their own)
    status              VARCHAR NOT NULL,      -- 'running' | 'completed' | 'failed'; a killed run stays 'running'
    config              JSON NOT NULL,         -- the validated training options
    base_model          VARCHAR NOT NULL,      -- the model name or folder training started from
    dataset             VARCHAR NOT NULL,      -- the view read: 'sft_dataset', 'preference_dataset', ...
    data_version        VARCHAR NOT NULL,      -- content_hash of the sorted set of row keys read, and their count
    data_rows           INTEGER NOT NULL,      -- rows read, both splits
    train_rows          INTEGER NOT NULL,
    eval_rows           INTEGER NOT NULL,
    out_dir             VARCHAR NOT NULL,      -- where its checkpoints and final model go
    world_size          INTEGER NOT NULL,      -- training processes
    device              VARCHAR NOT NULL,      -- 'cpu' | 'cuda'
    precision           VARCHAR NOT NULL,      -- 'fp32' | 'bf16' (bf16 autocast over fp32 weights)
    total_steps         INTEGER NOT NULL,      -- optimizer steps planned
    steps_done          INTEGER NOT NULL,      -- optimizer steps whose state is saved (last checkpoint or the end)
    resumes             INTEGER NOT NULL,      -- how many times it continued from a checkpoint
    final_path          VARCHAR,               -- the servable model folder, once completed
    started_at          TIMESTAMP NOT NULL,
    finished_at         TIMESTAMP,
    prefect_flow_run_id VARCHAR,
    error               VARCHAR
);

-- Metrics, one row per (run, phase, step, name): long, so any trainer can log any metric and users pivot in SQL.
-- phase 'step' holds the values of a step's own batch; 'train' and 'eval' hold a pass over the whole split
-- (step 0 = before training). A resumed run deletes the rows past its checkpoint before writing them again.
CREATE TABLE train_metrics (
    run_id     VARCHAR NOT NULL,
    phase      VARCHAR NOT NULL,
    step       INTEGER NOT NULL,
    name       VARCHAR NOT NULL,               -- 'loss', 'lr', 'grad_norm', 'reward_accuracy', 'logp_margin', ...
    value      DOUBLE,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, phase, step, name)
);

-- Checkpoints, registered once their folder is complete (written under a temporary name, then renamed).
CREATE TABLE train_checkpoints (
    run_id     VARCHAR NOT NULL,
    kind       VARCHAR NOT NULL,               -- 'resume' (trainer state to continue from) | 'final' (servable model)
    step       INTEGER NOT NULL,
    path       VARCHAR NOT NULL,
    bytes      BIGINT,
    pruned     BOOLEAN NOT NULL,               -- its folder was deleted to keep only the newest few
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, kind, step)
);

-- Reward-model scores of stored responses (`rlaif score --model RM`): one row per reward model and response.
CREATE TABLE reward_scores (
    reward_model VARCHAR NOT NULL,             -- the reward model's identity: its training run id and step
    key          VARCHAR NOT NULL,             -- generations.key of the scored response
    prompt_id    VARCHAR,
    stage        VARCHAR,                      -- the generation's stage: 'respond', 'revise', ...
    reward       DOUBLE NOT NULL,              -- normalised: mean 0, std 1 on the reward model's reference set
    reward_raw   DOUBLE NOT NULL,              -- the scalar head's output before normalising
    model_path   VARCHAR NOT NULL,             -- the folder it was loaded from
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (reward_model, key)
);

-- Win-rate evaluations (`rlaif eval winrate`): a policy against its base on held-out prompts, judged in both
-- orders. One row per evaluation; its engine calls are in generations under run_id (a `runs` row, kind
-- 'eval-winrate'). The length-controlled win rate follows Dubois et al. 2024 (arXiv 2404.04475): a logistic
-- GLM logit p = glm_intercept + glm_length_coef * tanh((len_policy - len_base) / length_scale), fitted to the
-- judge's soft preferences; lc_win_rate = sigmoid(glm_intercept), the prediction at zero length difference.
CREATE TABLE winrate_evals (
    eval_id              VARCHAR PRIMARY KEY,  -- content_hash(policy, base, judge, prompts, sampling, seed, constitution)
    run_id               VARCHAR NOT NULL,
    policy               VARCHAR NOT NULL,
    base                 VARCHAR NOT NULL,
    judge_model          VARCHAR NOT NULL,
    constitution_version VARCHAR NOT NULL,
    prompts_source       VARCHAR,
    split                VARCHAR NOT NULL,     -- 'eval' (held out) | 'all'
    prompts              INTEGER NOT NULL,     -- prompts judged
    win_rate             DOUBLE,               -- mean P(policy better), debiased over both orders
    win_rate_low         DOUBLE,               -- 95% interval (normal approximation)
    win_rate_high        DOUBLE,
    lc_win_rate          DOUBLE,
    lc_win_rate_low      DOUBLE,               -- 95% interval (percentile bootstrap over prompts)
    lc_win_rate_high     DOUBLE,
    glm_intercept        DOUBLE,
    glm_length_coef      DOUBLE,
    length_scale         DOUBLE,               -- std of the length differences (characters); 0 = no length term
    wins                 INTEGER,              -- prompts with P(policy better) > 0.5
    ties                 INTEGER,
    losses               INTEGER,
    mean_len_policy      DOUBLE,
    mean_len_base        DOUBLE,
    seed                 BIGINT,
    params               JSON,                 -- sampling options and the rest of the evaluation's options
    created_at           TIMESTAMP NOT NULL
);

-- One row per evaluated prompt: both answers, both orders' judgements and their debiased mean.
CREATE TABLE winrate_judgements (
    eval_id       VARCHAR NOT NULL,
    prompt_id     VARCHAR NOT NULL,
    principle_id  VARCHAR NOT NULL,
    policy_output VARCHAR NOT NULL,
    base_output   VARCHAR NOT NULL,
    policy_key    VARCHAR,                     -- generations.key of each answer
    base_key      VARCHAR,
    p_policy_ab   DOUBLE,                      -- P(policy better) with the policy's answer shown as (A)
    p_policy_ba   DOUBLE,                      -- ... shown as (B)
    p_policy      DOUBLE,                      -- their mean
    consistent    BOOLEAN,
    len_policy    INTEGER NOT NULL,            -- characters
    len_base      INTEGER NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (eval_id, prompt_id)
);
