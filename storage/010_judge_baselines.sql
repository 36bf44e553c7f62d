-- 010: judge evaluations beside baselines that cannot read, overall and per kind of pair.
-- Each baseline has its 95% Wilson interval (_lo, _hi) like the other metrics; `longer`/`shorter` are in 005.

ALTER TABLE judge_evals ADD COLUMN overlap DOUBLE;        -- baseline: the fake engine's word-overlap rule
ALTER TABLE judge_evals ADD COLUMN overlap_lo DOUBLE;
ALTER TABLE judge_evals ADD COLUMN overlap_hi DOUBLE;
ALTER TABLE judge_evals ADD COLUMN slot_a DOUBLE;         -- baseline: always the file's response_a
ALTER TABLE judge_evals ADD COLUMN slot_a_lo DOUBLE;
ALTER TABLE judge_evals ADD COLUMN slot_a_hi DOUBLE;
ALTER TABLE judge_evals ADD COLUMN split VARCHAR;         -- the pair file's split judged ('dev' | 'eval'), NULL: all
ALTER TABLE judge_evals ADD COLUMN best_baseline VARCHAR; -- 'longer' | 'shorter' | 'overlap' | 'slot_a'
ALTER TABLE judge_evals ADD COLUMN signal BOOLEAN;        -- agreement_lo > the best baseline's agreement
-- per kind: {kind: {agreement|longer|shorter|overlap|slot_a: {value, lo, hi, n}}}
ALTER TABLE judge_evals ADD COLUMN kinds JSON;

ALTER TABLE judge_eval_pairs ADD COLUMN kind VARCHAR;     -- the pair file's `kind` column (what the pair tests)
ALTER TABLE judge_eval_pairs ADD COLUMN split VARCHAR;    -- the pair file's `split` column
ALTER TABLE judge_eval_pairs ADD COLUMN overlap_a DOUBLE; -- word-overlap score of response_a (per word)
ALTER TABLE judge_eval_pairs ADD COLUMN overlap_b DOUBLE;
