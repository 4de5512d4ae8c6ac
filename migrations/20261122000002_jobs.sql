-- The durable job queue's two cross-tenant doors.
--
-- Jobs live in the tenant table `jobs` (foundation migration) under forced
-- row-level security. A worker serves every tenant, so it needs one narrow
-- way to find out which jobs are due; everything else (reading the payload,
-- recording the outcome) happens inside that tenant's `TenantTx`.
--
-- Both functions are listed in tests/api/catalog.rs, pin their search_path,
-- and return identifiers only, never payloads, errors or call details.

-- Claims up to p_limit due jobs of the given kinds, across tenants. Due:
-- queued with run_at reached, or running with an expired lease (a worker
-- that crashed or hung). Claiming sets the job running, counts the attempt
-- and leases it for p_lease_seconds. SKIP LOCKED lets concurrent workers
-- claim disjoint jobs without waiting on each other. Kinds the caller has
-- no handler for are never claimed, so they keep their attempts.
CREATE FUNCTION platform_claim_due_jobs(p_kinds text[], p_lease_seconds double precision,
                                        p_limit integer)
    RETURNS TABLE (customer_id uuid, job_id uuid)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        WITH due AS (
            SELECT j.customer_id, j.job_id
            FROM jobs j
            WHERE j.kind = ANY (p_kinds)
              AND ((j.status = 'queued' AND j.run_at <= now())
                   OR (j.status = 'running' AND j.locked_until < now()))
            ORDER BY j.run_at, j.created_at
            LIMIT greatest(p_limit, 0)
            FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs j
        SET status = 'running',
            attempts = j.attempts + 1,
            locked_until = now() + make_interval(secs => greatest(p_lease_seconds, 1)),
            updated_at = now()
        FROM due
        WHERE j.customer_id = due.customer_id AND j.job_id = due.job_id
        RETURNING j.customer_id, j.job_id
    $$;

-- Tenants with calls still open (ringing or in progress, no end time): the
-- startup crash recovery then closes them inside each tenant's transaction.
-- Returns tenant ids only; which calls, and whose, stays behind RLS.
CREATE FUNCTION platform_customers_with_open_calls()
    RETURNS TABLE (customer_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT DISTINCT c.customer_id FROM calls c
        WHERE c.ended_at IS NULL AND c.status IN ('ringing', 'in-progress')
        ORDER BY 1
    $$;

REVOKE ALL ON FUNCTION platform_claim_due_jobs(text[], double precision, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform_claim_due_jobs(text[], double precision, integer) TO switchboard_app;
REVOKE ALL ON FUNCTION platform_customers_with_open_calls() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform_customers_with_open_calls() TO switchboard_app;
