-- 003: data-quality flags, kept beside the rows they describe. The flagged tables stay intact: a flag is a row
-- here, and the dataset views leave flagged rows out while the *_candidates views show every row with its flags.
-- A flag stores what was measured and the threshold it was held against, so users can re-filter with SQL.

CREATE TABLE row_flags (
    target     VARCHAR NOT NULL,   -- what is flagged: 'revision', 'response', 'pair', ...
    target_id  VARCHAR NOT NULL,   -- that row's key, e.g. a chain_id and round, or a pair_id
    flag       VARCHAR NOT NULL,   -- e.g. 'empty', 'unchanged', 'refusal', 'truncated', 'near_duplicate', 'tie'
    value      DOUBLE,             -- the measured quantity (a similarity, a ratio, a z-score), when there is one
    threshold  DOUBLE,             -- the setting it was compared with
    detail     VARCHAR,            -- a short human-readable reason
    run_id     VARCHAR NOT NULL,   -- the run that computed the flag
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (target, target_id, flag)
);
