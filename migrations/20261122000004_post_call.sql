-- Post-call work: the retention sweep's one cross-tenant door.
--
-- The periodic retention job must know which tenants have a transcript
-- retention period at all; the deleting itself happens inside each
-- tenant's `TenantTx`. Listed in tests/api/catalog.rs; pins its
-- search_path and returns tenant ids only (not even the period, which the
-- job reads as the tenant).
CREATE FUNCTION platform_customers_with_retention()
    RETURNS TABLE (customer_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT c.customer_id FROM customers c
        WHERE c.transcript_retention_days IS NOT NULL
        ORDER BY 1
    $$;

REVOKE ALL ON FUNCTION platform_customers_with_retention() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION platform_customers_with_retention() TO switchboard_app;

-- Retention deletes the turns of calls that started before a cutoff.
CREATE INDEX calls_started_idx ON calls (customer_id, started_at);
