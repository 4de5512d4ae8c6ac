-- Indexes for the memory API and the caller card.
--
-- The caller card (src/memory/card.rs) reads one caller's open follow-ups
-- at every call start; the partial index keeps that an index range scan
-- however many notes and resolved follow-ups the caller has. Per-call
-- personality rows and a caller's facts (current and superseded) are read
-- and erased by caller. Every index leads with customer_id.

CREATE INDEX caller_memories_open_follow_ups_idx
    ON caller_memories (customer_id, user_id, created_at DESC)
    WHERE kind = 'follow_up' AND resolved_at IS NULL;

CREATE INDEX call_personality_user_idx
    ON call_personality (customer_id, user_id, created_at DESC);

CREATE INDEX caller_facts_user_idx
    ON caller_facts (customer_id, user_id, created_at DESC);
