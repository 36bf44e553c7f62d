-- 009: `rlaif generate prefs`: the policy's sampled candidates (issue 9). Pairs, verdicts, canaries and the
-- preference views are 005's; this adds the one thing they do not hold: which responses a run sampled for each
-- prompt, including those that never made a pair (empty, or the same text as another sample).

CREATE TABLE candidates (
    candidate_id   VARCHAR PRIMARY KEY,   -- content_hash(prompt's chain in the run's configuration, sample)
    run_id         VARCHAR NOT NULL,
    prompt_id      VARCHAR NOT NULL,
    sample         INTEGER NOT NULL,      -- 0 .. K-1; its seed derives from (run seed, prompt, sample)
    response_key   VARCHAR NOT NULL,      -- generations.key of the sample (comparisons.response_key_a/_b)
    response       VARCHAR,               -- NULL when the model returned nothing: never paired
    finish_reason  VARCHAR,
    model          VARCHAR NOT NULL,      -- the policy model
    config_hash    VARCHAR NOT NULL,
    created_at     TIMESTAMP NOT NULL
);
