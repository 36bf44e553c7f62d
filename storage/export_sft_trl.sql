-- The SFT export in TRL's conversational language-modeling format (`rlaif export sft --format trl`): `messages`
-- alone, so SFTTrainer applies the tokenizer's chat template. Every prompt turn is kept (system included), and the
-- last turn is the final revision (or a helpful prompt's unrevised answer).
-- Filters: $run and $split (NULL: no filter).
SELECT messages
FROM sft_dataset
WHERE ($run IS NULL OR run_id = $run) AND ($split IS NULL OR split = $split)
ORDER BY prompt_id, chain_id
