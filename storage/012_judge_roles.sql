-- 012: who judged. A win-rate evaluation records its judge's engine and mode (the evaluation role,
-- rlaif.train.judge_role), and whether that judge is the policy's base model or a model that labelled the
-- training data: such a figure measures agreement with itself, and the report says so beside it.

ALTER TABLE winrate_evals ADD COLUMN judge_engine VARCHAR;       -- 'transformers' | 'openai' | 'vllm' | 'fake'
ALTER TABLE winrate_evals ADD COLUMN judge_mode VARCHAR;         -- 'choice' | 'cot' | 'score' | 'contrast'
ALTER TABLE winrate_evals ADD COLUMN judge_is_base BOOLEAN;      -- the judge is the model the policy was trained from
ALTER TABLE winrate_evals ADD COLUMN judge_is_labeller BOOLEAN;  -- the judge labelled data (critic, judge, reward)
ALTER TABLE winrate_evals ADD COLUMN judge_warning VARCHAR;      -- the warning line the command printed, or NULL

-- The RL monitor's judge: its mode beside the model 007 already records.
ALTER TABLE overopt_records ADD COLUMN judge_mode VARCHAR;
