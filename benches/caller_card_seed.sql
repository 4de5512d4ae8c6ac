-- Seed data for benches/caller_card.rs: :tenants tenants and about
-- :memory_rows caller-memory rows, generated server side and run as the
-- owner role (which bypasses row-level security; only the measurement goes
-- through the application role).
--
-- Deterministic: every choice comes from hashint8() of the tenant and
-- caller numbers, and every time from a fixed anchor, so two seedings give
-- the same shape. The tokens :tenants, :candidates, :memory_rows and
-- :max_calls are replaced by the bench (psql -v fills them the same way).
-- A line starting `-- step:` begins the next statement and names it in the
-- bench's progress output.
--
-- Shape: tenants are skewed (tenant t gets a share of callers proportional
-- to 1/sqrt(t), about 10x from the largest to the smallest); calls per
-- caller follow a Pareto tail (alpha 2: most callers called once to three
-- times, a few dozen hundreds of times). The same phone numbers recur
-- across tenants, as real callers do, so only customer_id tells their
-- cards apart. Per caller with k calls and f current facts: a profile,
-- running personality averages, k summaries, k per-call personality rows,
-- f current facts plus k - 1 superseded ones, k notes, ceil(k/2)
-- follow-ups (the older resolved, except for one caller in 20 who never
-- has one resolved) and one preference.

-- step: tenants
INSERT INTO customers (customer_id, slug, name, agent_name, greeting,
                       template_slug, template_version, timezone)
SELECT md5('bench-tenant-' || t)::uuid, 'bench-' || t, 'Bench tenant ' || t, 'Ava',
       'Thanks for calling, how can I help?',
       (ARRAY['insurance', 'real_estate', 'law_firm', 'general'])[1 + t % 4], 1,
       'America/Los_Angeles'
FROM generate_series(1, :tenants) t;

-- step: callers (planning table)
CREATE TEMP TABLE bench_callers AS
WITH tenants AS (
    SELECT t, md5('bench-tenant-' || t)::uuid AS customer_id,
           ceil(:candidates * (1 / sqrt(t)) / sum(1 / sqrt(t)) OVER ())::int AS pool
    FROM generate_series(1, :tenants) t
), shaped AS (
    SELECT tn.t, tn.customer_id, c,
           '+1555' || lpad(c::text, 7, '0') AS user_id,
           least(:max_calls, 1 + floor(3 * (power(
               ((hashint8(tn.t::bigint * 1000003 + c) & 16777215) + 1) / 16777216.0,
               -0.5) - 1)))::int AS k,
           3 + (hashint8(tn.t::bigint * 7919 + c) & 2147483647) % 5 AS f,
           (hashint8(tn.t::bigint * 104729 + c) & 2147483647) % 20 = 0 AS neglected,
           (hashint8(tn.t::bigint * 15485863 + c) & 2147483647) % 2592000 AS offset_s,
           hashint8(tn.t::bigint * 31337 + c) AS shuffle
    FROM tenants tn, generate_series(1, tn.pool) c
), costed AS (
    SELECT *, 62208000 / k AS gap_s, 2 + f + 4 * k + (k + 1) / 2 AS memory_rows
    FROM shaped
), running AS (
    SELECT *, sum(memory_rows) OVER (ORDER BY shuffle, t, c) AS upto FROM costed
)
SELECT t, customer_id, c, user_id, k, f, neglected, offset_s, gap_s
FROM running
WHERE upto - memory_rows < :memory_rows;

-- step: caller_profiles
INSERT INTO caller_profiles (customer_id, user_id, display_name, fields, quick_bio,
                             call_count, first_call_at, last_call_at, created_at, updated_at)
SELECT b.customer_id, b.user_id, 'Caller ' || b.c,
       CASE b.t % 4
           WHEN 1 THEN jsonb_build_object(
               'name', 'Caller ' || b.c,
               'city', (ARRAY['Irvine', 'Anaheim', 'Tustin', 'Orange'])[1 + b.c % 4],
               'since', 2005 + b.c % 20,
               'policies', (1 + b.c % 3) || ' Auto + 1 Home',
               'household', 'married, ' || b.c % 4 || ' children')
           WHEN 2 THEN jsonb_build_object(
               'name', 'Caller ' || b.c,
               'role', (ARRAY['Buyer', 'Seller'])[1 + b.c % 2],
               'budget', '$' || (300 + b.c % 900) || 'K',
               'financing', (ARRAY['Pre-approved', 'Cash', 'Exploring'])[1 + b.c % 3],
               'area', (ARRAY['Costa Mesa', 'Newport', 'Huntington'])[1 + b.c % 3])
           WHEN 3 THEN jsonb_build_object(
               'name', 'Caller ' || b.c,
               'matter', (ARRAY['Estate planning', 'Divorce', 'Contract'])[1 + b.c % 3],
               'status', (ARRAY['Client', 'Prospect'])[1 + b.c % 2],
               'attorney', (ARRAY['Ms. Park', 'Mr. Diaz'])[1 + b.c % 2])
           ELSE jsonb_build_object(
               'name', 'Caller ' || b.c,
               'company', 'Company ' || b.c % 97,
               'notes', 'Prefers email for quotes')
       END,
       'Caller ' || b.c || ' | since ' || (2005 + b.c % 20),
       b.k,
       timestamptz '2026-06-01 00:00:00+00'
           - ((b.k - 1)::bigint * b.gap_s + b.offset_s) * interval '1 second',
       timestamptz '2026-06-01 00:00:00+00' - b.offset_s * interval '1 second',
       timestamptz '2026-06-01 00:00:00+00'
           - ((b.k - 1)::bigint * b.gap_s + b.offset_s) * interval '1 second',
       timestamptz '2026-06-01 00:00:00+00' - b.offset_s * interval '1 second'
FROM bench_callers b;

-- step: calls
INSERT INTO calls (customer_id, call_id, call_sid, user_id, to_number, status, end_reason,
                   stream_sid, started_at, answered_at, ended_at, duration_seconds, created_at)
SELECT b.customer_id, md5('bench-call-' || b.t || '-' || b.c || '-' || j)::uuid,
       'CA' || md5('bench-sid-' || b.t || '-' || b.c || '-' || j),
       b.user_id, '+1800555' || lpad(b.t::text, 4, '0'), 'completed', 'caller-hangup',
       'MZ' || md5('bench-stream-' || b.t || '-' || b.c || '-' || j),
       at, at + interval '2 seconds',
       at + (60 + (j * 37 + b.c) % 540) * interval '1 second',
       60 + (j * 37 + b.c) % 540, at
FROM bench_callers b,
     generate_series(1, b.k) j,
     LATERAL (SELECT timestamptz '2026-06-01 00:00:00+00'
                     - ((b.k - j)::bigint * b.gap_s + b.offset_s) * interval '1 second' AS at) s;

-- step: call_summaries
INSERT INTO call_summaries (customer_id, call_id, user_id, summary, topics, action_items,
                            source, created_at)
SELECT c.customer_id, c.call_id, c.user_id,
       'The caller asked about ' || tp.a || ' and then about ' || tp.b
           || '. The agent checked the details on file, explained the next steps and '
           || 'confirmed the best number to reach them. '
           || CASE WHEN h % 3 = 0 THEN 'They asked for a call back later this week.'
                   ELSE 'Nothing else was needed today.' END,
       ARRAY[tp.a, tp.b],
       CASE WHEN h % 2 = 0 THEN jsonb_build_array('Send the ' || tp.a || ' documents',
                                                  'Call back about ' || tp.b)
            ELSE '[]'::jsonb END,
       CASE WHEN h % 10 = 0 THEN 'heuristic' ELSE 'llm' END,
       c.ended_at + interval '30 seconds'
FROM calls c,
     LATERAL (SELECT hashtext(c.call_sid) & 2147483647 AS h) hh,
     LATERAL (SELECT (ARRAY['auto policy', 'home policy', 'billing', 'a claim', 'renewal',
                            'a new driver', 'roadside help', 'a quote', 'a showing',
                            'an offer', 'financing', 'an appointment', 'documents',
                            'a payment', 'cancellation'])[1 + h % 15] AS a,
                     (ARRAY['the deductible', 'a discount', 'coverage limits',
                            'the closing date', 'the retainer', 'office hours',
                            'a refund', 'the inspection'])[1 + (h / 15) % 8] AS b) tp;

-- step: call_personality
INSERT INTO call_personality (customer_id, call_id, user_id, formality, verbosity, sentiment,
                              patience, decisiveness, style_notes, created_at)
SELECT c.customer_id, c.call_id, c.user_id,
       (h % 1001) / 1000.0, ((h / 7) % 1001) / 1000.0, ((h / 11) % 2001 - 1000) / 1000.0,
       ((h / 13) % 1001) / 1000.0, ((h / 17) % 1001) / 1000.0,
       'Speaks plainly; likes short answers.', c.ended_at + interval '40 seconds'
FROM calls c,
     LATERAL (SELECT hashtext(c.call_id::text) & 2147483647 AS h) hh;

-- step: caller_personality
INSERT INTO caller_personality (customer_id, user_id, samples, avg_formality, avg_verbosity,
                                avg_sentiment, avg_patience, avg_decisiveness, updated_at)
SELECT customer_id, user_id, count(*), avg(formality), avg(verbosity), avg(sentiment),
       avg(patience), avg(decisiveness), max(created_at)
FROM call_personality
GROUP BY customer_id, user_id;

-- step: caller_facts (current)
INSERT INTO caller_facts (customer_id, fact_id, user_id, key, value, source_call_id, created_at)
SELECT b.customer_id, gen_random_uuid(), b.user_id,
       (ARRAY['vehicle', 'household', 'policies', 'employer', 'pet', 'birthday',
              'preferred_time', 'budget', 'area'])[1 + (b.c + i) % 9],
       to_jsonb('value ' || i || ' as of call ' || b.k),
       md5('bench-call-' || b.t || '-' || b.c || '-' || b.k)::uuid,
       timestamptz '2026-06-01 00:00:00+00' - b.offset_s * interval '1 second'
FROM bench_callers b, generate_series(0, b.f - 1) i;

-- step: caller_facts (superseded history)
INSERT INTO caller_facts (customer_id, fact_id, user_id, key, value, source_call_id,
                          superseded_at, created_at)
SELECT b.customer_id, gen_random_uuid(), b.user_id,
       (ARRAY['vehicle', 'household', 'policies', 'employer', 'pet', 'birthday',
              'preferred_time', 'budget', 'area'])[1 + (b.c + j % b.f) % 9],
       to_jsonb('value ' || j % b.f || ' as of call ' || j),
       md5('bench-call-' || b.t || '-' || b.c || '-' || j)::uuid,
       at + b.gap_s * interval '1 second', at
FROM bench_callers b,
     generate_series(1, b.k - 1) j,
     LATERAL (SELECT timestamptz '2026-06-01 00:00:00+00'
                     - ((b.k - j)::bigint * b.gap_s + b.offset_s) * interval '1 second' AS at) s;

-- step: caller_memories (notes)
INSERT INTO caller_memories (customer_id, memory_id, user_id, kind, content, source_call_id,
                             created_at)
SELECT b.customer_id, gen_random_uuid(), b.user_id, 'note',
       'Call ' || j || ': mentioned ' || (ARRAY['a move next month', 'a new car',
           'a teenage driver', 'a home renovation', 'a job change', 'a new baby',
           'travel plans'])[1 + (b.c + j) % 7] || '.',
       md5('bench-call-' || b.t || '-' || b.c || '-' || j)::uuid,
       at + interval '1 minute'
FROM bench_callers b,
     generate_series(1, b.k) j,
     LATERAL (SELECT timestamptz '2026-06-01 00:00:00+00'
                     - ((b.k - j)::bigint * b.gap_s + b.offset_s) * interval '1 second' AS at) s;

-- step: caller_memories (follow-ups)
INSERT INTO caller_memories (customer_id, memory_id, user_id, kind, content, source_call_id,
                             resolved_at, created_at)
SELECT b.customer_id, gen_random_uuid(), b.user_id, 'follow_up',
       'Follow up from call ' || j || ': ' || (ARRAY['send the renewal quote',
           'confirm the new driver was added', 'book the showing',
           'check the claim status', 'return the signed documents'])[1 + (b.c + j) % 5],
       md5('bench-call-' || b.t || '-' || b.c || '-' || j)::uuid,
       CASE WHEN b.neglected OR j >= b.k - 2 THEN NULL
            ELSE at + interval '3 days' END,
       at + interval '1 minute'
FROM bench_callers b,
     generate_series(1, b.k, 2) j,
     LATERAL (SELECT timestamptz '2026-06-01 00:00:00+00'
                     - ((b.k - j)::bigint * b.gap_s + b.offset_s) * interval '1 second' AS at) s;

-- step: caller_memories (preferences)
INSERT INTO caller_memories (customer_id, memory_id, user_id, kind, content, created_at)
SELECT b.customer_id, gen_random_uuid(), b.user_id, 'preference',
       (ARRAY['Prefers a call back in the morning', 'Prefers text messages',
              'Prefers Spanish', 'Wants the agent to be brief'])[1 + b.c % 4],
       timestamptz '2026-06-01 00:00:00+00'
           - ((b.k - 1)::bigint * b.gap_s + b.offset_s) * interval '1 second'
FROM bench_callers b;
