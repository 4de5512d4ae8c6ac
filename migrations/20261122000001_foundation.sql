-- Switchboard foundation schema.
--
-- Runs as `switchboard_owner` (owns every object, BYPASSRLS so that the few
-- listed SECURITY DEFINER functions below can answer platform questions).
-- The server connects as `switchboard_app`: NOSUPERUSER, NOBYPASSRLS, owns
-- nothing, and is granted row access table by table.
--
-- Tenant isolation rules, checked by tests/db/catalog.rs:
--   * every table with a `customer_id` column has ENABLE + FORCE ROW LEVEL
--     SECURITY and exactly one policy `tenant_isolation` comparing
--     `customer_id` with `app_customer_id()` in USING and WITH CHECK;
--   * `app.customer_id` is only ever set transaction-locally
--     (`set_config('app.customer_id', …, true)`) by `TenantTx`;
--   * primary keys, foreign keys and unique indexes lead with `customer_id`,
--     except the two platform-wide uniqueness rules (tenant slug, phone
--     number), which only platform operations ever write.

-- The tenant of the current transaction, or NULL when none is set. NULL makes
-- every policy comparison NULL: reads see nothing, writes fail WITH CHECK.
CREATE FUNCTION app_customer_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.customer_id', true), '')::uuid $$;

-- ---------------------------------------------------------------------------
-- Platform-level tables (no tenant data).
-- ---------------------------------------------------------------------------

-- Versioned industry templates: which caller profile fields a tenant tracks
-- and how the one-line quick bio is rendered from them.
CREATE TABLE industry_templates (
    slug             text        NOT NULL CHECK (slug ~ '^[a-z][a-z0-9_]{1,39}$'),
    version          integer     NOT NULL CHECK (version > 0),
    name             text        NOT NULL,
    -- [{"key": "policies", "label": "Policies", "type": "text", "sensitive": false}, …]
    profile_fields   jsonb       NOT NULL CHECK (jsonb_typeof(profile_fields) = 'array'),
    quick_bio_format text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slug, version)
);

INSERT INTO industry_templates (slug, version, name, profile_fields, quick_bio_format) VALUES
('insurance', 1, 'Insurance agency',
 '[{"key":"name","label":"Name","type":"text","sensitive":false},
   {"key":"city","label":"City","type":"text","sensitive":false},
   {"key":"since","label":"Client since","type":"year","sensitive":false},
   {"key":"policies","label":"Policies","type":"text","sensitive":true},
   {"key":"household","label":"Household","type":"text","sensitive":true}]',
 '{name} | {city} | Client since {since} | {policies}'),
('real_estate', 1, 'Real-estate office',
 '[{"key":"name","label":"Name","type":"text","sensitive":false},
   {"key":"role","label":"Buyer or seller","type":"text","sensitive":false},
   {"key":"budget","label":"Budget","type":"money","sensitive":true},
   {"key":"financing","label":"Financing","type":"text","sensitive":true},
   {"key":"area","label":"Area of interest","type":"text","sensitive":false}]',
 '{name} | {role} | {budget} budget | {financing}'),
('law_firm', 1, 'Law firm',
 '[{"key":"name","label":"Name","type":"text","sensitive":false},
   {"key":"matter","label":"Matter type","type":"text","sensitive":true},
   {"key":"status","label":"Client status","type":"text","sensitive":false},
   {"key":"attorney","label":"Attorney","type":"text","sensitive":false}]',
 '{name} | {status} | {matter} | Attorney: {attorney}'),
('general', 1, 'General business',
 '[{"key":"name","label":"Name","type":"text","sensitive":false},
   {"key":"company","label":"Company","type":"text","sensitive":false},
   {"key":"notes","label":"Notes","type":"text","sensitive":false}]',
 '{name} | {company}');

-- Platform operators (not tenant staff).
CREATE TABLE platform_admins (
    admin_id      uuid        PRIMARY KEY,
    email         text        NOT NULL,
    display_name  text        NOT NULL,
    password_hash text        NOT NULL,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX platform_admins_email_key ON platform_admins (lower(email));

-- Platform and service API keys. Only a SHA-256 of the key is stored.
CREATE TABLE platform_api_keys (
    key_id     uuid        PRIMARY KEY,
    scope      text        NOT NULL CHECK (scope IN ('platform', 'service')),
    name       text        NOT NULL,
    prefix     text        NOT NULL,
    key_hash   bytea       NOT NULL CHECK (length(key_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE UNIQUE INDEX platform_api_keys_hash_key ON platform_api_keys (key_hash);

-- What platform operators did (tenant events go to each tenant's audit_log).
CREATE TABLE platform_audit_log (
    audit_id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor               text        NOT NULL,
    action              text        NOT NULL,
    subject_customer_id uuid,
    details             jsonb       NOT NULL DEFAULT '{}',
    at                  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- Tenant tables. Every one carries customer_id and is under RLS.
-- ---------------------------------------------------------------------------

CREATE TABLE customers (
    customer_id             uuid        PRIMARY KEY,
    slug                    text        NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name                    text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status                  text        NOT NULL DEFAULT 'active'
                                        CHECK (status IN ('active', 'suspended', 'closed')),
    plan_tier               text        NOT NULL DEFAULT 'starter',
    monthly_call_limit      integer     CHECK (monthly_call_limit >= 0),
    monthly_minute_limit    integer     CHECK (monthly_minute_limit >= 0),
    max_concurrent_calls    integer     NOT NULL DEFAULT 5 CHECK (max_concurrent_calls > 0),
    agent_name              text        NOT NULL,
    greeting                text        NOT NULL,
    voice_id                text,
    -- Brand voice and personality: {"tone": "...", "style": [...], ...}
    personality             jsonb       NOT NULL DEFAULT '{}',
    prohibited_topics       text[]      NOT NULL DEFAULT '{}',
    template_slug           text        NOT NULL,
    template_version        integer     NOT NULL,
    timezone                text        NOT NULL DEFAULT 'UTC',
    transfer_number         text        CHECK (transfer_number ~ '^\+[1-9][0-9]{6,14}$'),
    -- Per-tenant provider choices (models, temperature, voice settings).
    provider_settings       jsonb       NOT NULL DEFAULT '{}',
    transcript_retention_days integer   CHECK (transcript_retention_days > 0),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (template_slug, template_version) REFERENCES industry_templates (slug, version)
);
-- Platform-wide: two tenants never share a slug. Only platform operations
-- create or rename tenants.
CREATE UNIQUE INDEX customers_slug_key ON customers (slug);

CREATE TABLE phone_numbers (
    customer_id        uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    e164               text        NOT NULL CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    label              text,
    -- Twilio account that owns the number: NULL means the platform account.
    twilio_account_sid text        CHECK (twilio_account_sid ~ '^AC[0-9a-fA-F]{32}$'),
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, e164)
);
-- Platform-wide: a number rings exactly one tenant.
CREATE UNIQUE INDEX phone_numbers_e164_key ON phone_numbers (e164);

CREATE TABLE staff_users (
    customer_id   uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    user_id       uuid        NOT NULL,
    email         text        NOT NULL,
    display_name  text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('admin', 'agent', 'viewer')),
    password_hash text        NOT NULL,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, user_id)
);
CREATE UNIQUE INDEX staff_users_email_key ON staff_users (customer_id, lower(email));

CREATE TABLE tenant_api_keys (
    customer_id  uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    key_id       uuid        NOT NULL,
    name         text        NOT NULL,
    prefix       text        NOT NULL,
    key_hash     bytea       NOT NULL CHECK (length(key_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (customer_id, key_id)
);
CREATE UNIQUE INDEX tenant_api_keys_hash_key ON tenant_api_keys (customer_id, key_hash);
CREATE INDEX tenant_api_keys_hash_idx ON tenant_api_keys (key_hash);

-- Bring-your-own vendor credentials, sealed with XChaCha20-Poly1305. The
-- associated data binds customer, provider and key version, so a sealed
-- secret copied to another row or tenant does not open.
CREATE TABLE provider_credentials (
    customer_id uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    provider    text        NOT NULL CHECK (provider IN ('twilio', 'openai', 'elevenlabs', 'deepgram')),
    -- Non-secret identifier: Twilio AccountSid, or NULL.
    public_id   text,
    -- Non-secret settings: base URL, model, region.
    settings    jsonb       NOT NULL DEFAULT '{}',
    key_version integer     NOT NULL CHECK (key_version > 0),
    nonce       bytea       NOT NULL CHECK (length(nonce) = 24),
    ciphertext  bytea       NOT NULL,
    -- Last four characters, for display ("…f00d").
    secret_hint text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, provider)
);
CREATE INDEX provider_credentials_public_id_idx ON provider_credentials (provider, public_id);

-- One row per (tenant, caller number). user_id is the caller's E.164 number.
CREATE TABLE caller_profiles (
    customer_id   uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    user_id       text        NOT NULL CHECK (user_id ~ '^\+[1-9][0-9]{6,14}$'),
    display_name  text,
    -- Template variables: {"name": "Jane Doe", "city": "Irvine", …}
    fields        jsonb       NOT NULL DEFAULT '{}',
    quick_bio     text,
    call_count    integer     NOT NULL DEFAULT 0,
    first_call_at timestamptz,
    last_call_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, user_id)
);

CREATE TABLE calls (
    customer_id      uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    call_id          uuid        NOT NULL,
    call_sid         text        NOT NULL,
    -- Caller's E.164 number; NULL when caller ID is withheld.
    user_id          text,
    to_number        text        NOT NULL,
    direction        text        NOT NULL DEFAULT 'inbound',
    status           text        NOT NULL DEFAULT 'ringing'
                                 CHECK (status IN ('queued', 'initiated', 'ringing', 'in-progress',
                                                   'completed', 'busy', 'failed', 'no-answer',
                                                   'canceled', 'refused', 'interrupted')),
    end_reason       text,
    stream_sid       text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    answered_at      timestamptz,
    ended_at         timestamptz,
    duration_seconds integer     CHECK (duration_seconds >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, call_id)
);
CREATE UNIQUE INDEX calls_call_sid_key ON calls (customer_id, call_sid);
CREATE INDEX calls_user_idx ON calls (customer_id, user_id, started_at DESC);
CREATE INDEX calls_open_idx ON calls (started_at) WHERE ended_at IS NULL;

-- The transcript, written turn by turn while the call runs.
CREATE TABLE call_turns (
    customer_id uuid        NOT NULL,
    call_id     uuid        NOT NULL,
    seq         integer     NOT NULL CHECK (seq >= 0),
    speaker     text        NOT NULL CHECK (speaker IN ('caller', 'agent', 'system', 'tool', 'dtmf')),
    text        text        NOT NULL,
    -- Agent turns cut short by barge-in: text holds what was heard.
    interrupted boolean     NOT NULL DEFAULT false,
    -- Stream time of the turn, milliseconds since the media stream started.
    start_ms    bigint,
    end_ms      bigint,
    -- Per-stage latency: {"stt_final_ms": …, "llm_first_token_ms": …, …}
    timings     jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, call_id, seq),
    FOREIGN KEY (customer_id, call_id) REFERENCES calls (customer_id, call_id) ON DELETE CASCADE
);

CREATE TABLE call_summaries (
    customer_id  uuid        NOT NULL,
    call_id      uuid        NOT NULL,
    user_id      text,
    summary      text        NOT NULL,
    topics       text[]      NOT NULL DEFAULT '{}',
    action_items jsonb       NOT NULL DEFAULT '[]',
    -- 'llm' or 'heuristic' (the fallback when the model's output was invalid).
    source       text        NOT NULL DEFAULT 'llm',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, call_id),
    FOREIGN KEY (customer_id, call_id) REFERENCES calls (customer_id, call_id) ON DELETE CASCADE
);
CREATE INDEX call_summaries_user_idx ON call_summaries (customer_id, user_id, created_at DESC);

-- Structured facts with supersession: the newest value of a key is current,
-- older ones keep the call they came from.
CREATE TABLE caller_facts (
    customer_id    uuid        NOT NULL,
    fact_id        uuid        NOT NULL,
    user_id        text        NOT NULL,
    key            text        NOT NULL,
    value          jsonb       NOT NULL,
    source_call_id uuid,
    superseded_by  uuid,
    superseded_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, fact_id),
    FOREIGN KEY (customer_id, user_id) REFERENCES caller_profiles (customer_id, user_id) ON DELETE CASCADE,
    FOREIGN KEY (customer_id, source_call_id) REFERENCES calls (customer_id, call_id) ON DELETE SET NULL (source_call_id)
);
CREATE UNIQUE INDEX caller_facts_current_key ON caller_facts (customer_id, user_id, key)
    WHERE superseded_at IS NULL;

-- Free-form memories (notes, follow-ups) about a caller.
CREATE TABLE caller_memories (
    customer_id    uuid        NOT NULL,
    memory_id      uuid        NOT NULL,
    user_id        text        NOT NULL,
    kind           text        NOT NULL DEFAULT 'note' CHECK (kind IN ('note', 'follow_up', 'preference')),
    content        text        NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    source_call_id uuid,
    resolved_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, memory_id),
    FOREIGN KEY (customer_id, user_id) REFERENCES caller_profiles (customer_id, user_id) ON DELETE CASCADE
);
CREATE INDEX caller_memories_user_idx ON caller_memories (customer_id, user_id, created_at DESC);

-- Personality scores for one call, each in [0, 1] (sentiment in [-1, 1]).
CREATE TABLE call_personality (
    customer_id  uuid        NOT NULL,
    call_id      uuid        NOT NULL,
    user_id      text        NOT NULL,
    formality    real        NOT NULL CHECK (formality BETWEEN 0 AND 1),
    verbosity    real        NOT NULL CHECK (verbosity BETWEEN 0 AND 1),
    sentiment    real        NOT NULL CHECK (sentiment BETWEEN -1 AND 1),
    patience     real        NOT NULL CHECK (patience BETWEEN 0 AND 1),
    decisiveness real        NOT NULL CHECK (decisiveness BETWEEN 0 AND 1),
    style_notes  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, call_id),
    FOREIGN KEY (customer_id, call_id) REFERENCES calls (customer_id, call_id) ON DELETE CASCADE
);

-- Running averages of call_personality per caller, maintained in SQL.
CREATE TABLE caller_personality (
    customer_id      uuid        NOT NULL,
    user_id          text        NOT NULL,
    samples          integer     NOT NULL DEFAULT 0,
    avg_formality    real        NOT NULL DEFAULT 0,
    avg_verbosity    real        NOT NULL DEFAULT 0,
    avg_sentiment    real        NOT NULL DEFAULT 0,
    avg_patience     real        NOT NULL DEFAULT 0,
    avg_decisiveness real        NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, user_id),
    FOREIGN KEY (customer_id, user_id) REFERENCES caller_profiles (customer_id, user_id) ON DELETE CASCADE
);

-- Metered usage per calendar month (UTC), for limits and billing.
CREATE TABLE usage_monthly (
    customer_id           uuid    NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    month                 date    NOT NULL CHECK (extract(day FROM month) = 1),
    calls                 integer NOT NULL DEFAULT 0,
    refused_calls         integer NOT NULL DEFAULT 0,
    call_seconds          bigint  NOT NULL DEFAULT 0,
    llm_prompt_tokens     bigint  NOT NULL DEFAULT 0,
    llm_completion_tokens bigint  NOT NULL DEFAULT 0,
    tts_characters        bigint  NOT NULL DEFAULT 0,
    stt_seconds           bigint  NOT NULL DEFAULT 0,
    sms_segments          integer NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, month)
);

CREATE TABLE audit_log (
    customer_id uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    audit_id    bigint      GENERATED ALWAYS AS IDENTITY,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    target      text,
    details     jsonb       NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, audit_id)
);

-- Durable background work (post-call summarisation, SMS, retention).
CREATE TABLE jobs (
    customer_id     uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    job_id          uuid        NOT NULL,
    kind            text        NOT NULL,
    -- Makes enqueueing idempotent, e.g. the call sid for post-call work.
    idempotency_key text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}',
    status          text        NOT NULL DEFAULT 'queued'
                                CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    run_at          timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, job_id)
);
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (customer_id, kind, idempotency_key);
CREATE INDEX jobs_ready_idx ON jobs (run_at) WHERE status IN ('queued', 'running');

CREATE TABLE sms_consent (
    customer_id uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('opted_in', 'opted_out')),
    source      text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, user_id)
);

CREATE TABLE sms_messages (
    customer_id   uuid        NOT NULL REFERENCES customers (customer_id) ON DELETE CASCADE,
    sms_id        uuid        NOT NULL,
    direction     text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    user_id       text        NOT NULL,
    from_number   text        NOT NULL,
    to_number     text        NOT NULL,
    body          text        NOT NULL,
    twilio_sid    text,
    status        text        NOT NULL,
    error_code    integer,
    segments      integer,
    call_id       uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, sms_id),
    FOREIGN KEY (customer_id, call_id) REFERENCES calls (customer_id, call_id) ON DELETE SET NULL (call_id)
);
CREATE INDEX sms_messages_user_idx ON sms_messages (customer_id, user_id, created_at DESC);
CREATE INDEX sms_messages_sid_idx ON sms_messages (twilio_sid);

-- ---------------------------------------------------------------------------
-- Row-level security: one policy per tenant table, identical everywhere.
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'customer_id' AND NOT a.attisdropped
        WHERE n.nspname = current_schema() AND c.relkind = 'r'
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (customer_id = app_customer_id())
                 WITH CHECK (customer_id = app_customer_id())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO switchboard_app', t);
    END LOOP;
END
$$;

GRANT SELECT ON industry_templates TO switchboard_app;
GRANT SELECT, INSERT, UPDATE ON platform_admins, platform_api_keys TO switchboard_app;
GRANT SELECT, INSERT ON platform_audit_log TO switchboard_app;

-- ---------------------------------------------------------------------------
-- The platform directory: the only cross-tenant reads, each narrow and
-- listed in tests/db/catalog.rs. They run as the owner (BYPASSRLS) and
-- return identifiers, never tenant content.
-- ---------------------------------------------------------------------------

-- Which tenant does a dialed number ring?
CREATE FUNCTION platform_resolve_number(p_e164 text)
    RETURNS TABLE (customer_id uuid, status text, twilio_account_sid text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT c.customer_id, c.status, n.twilio_account_sid
        FROM phone_numbers n JOIN customers c USING (customer_id)
        WHERE n.e164 = p_e164
    $$;

-- Tenant id for a slug (CLI and platform API address tenants by slug).
CREATE FUNCTION platform_customer_by_slug(p_slug text)
    RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$ SELECT customer_id FROM customers WHERE slug = p_slug $$;

-- The tenant list for platform operators: identity, status and this
-- month's usage counters, nothing else.
CREATE FUNCTION platform_customer_directory(p_month date)
    RETURNS TABLE (customer_id uuid, slug text, name text, status text, plan_tier text,
                   numbers bigint, calls integer, call_seconds bigint, created_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT c.customer_id, c.slug, c.name, c.status, c.plan_tier,
               (SELECT count(*) FROM phone_numbers n WHERE n.customer_id = c.customer_id),
               coalesce(u.calls, 0), coalesce(u.call_seconds, 0), c.created_at
        FROM customers c
        LEFT JOIN usage_monthly u ON u.customer_id = c.customer_id AND u.month = p_month
        ORDER BY c.slug
    $$;

-- Which tenant does a tenant API key belong to? Takes the key's SHA-256.
CREATE FUNCTION platform_authenticate_tenant_key(p_key_hash bytea)
    RETURNS TABLE (customer_id uuid, key_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT k.customer_id, k.key_id FROM tenant_api_keys k
        WHERE k.key_hash = p_key_hash AND k.revoked_at IS NULL
    $$;

-- Credentials sealed under an older master key version, for `keys rotate`.
CREATE FUNCTION platform_credentials_to_rotate(p_current_version integer)
    RETURNS TABLE (customer_id uuid, provider text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT customer_id, provider FROM provider_credentials
        WHERE key_version <> p_current_version
        ORDER BY customer_id, provider
    $$;

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'platform_resolve_number(text)',
        'platform_customer_by_slug(text)',
        'platform_customer_directory(date)',
        'platform_authenticate_tenant_key(bytea)',
        'platform_credentials_to_rotate(integer)']
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO switchboard_app', f);
    END LOOP;
END
$$;

-- Readiness (`GET /readyz`) compares applied migrations with the binary's.
GRANT SELECT ON _sqlx_migrations TO switchboard_app;
