-- Tenant isolation with row-level security.
--
-- Readers (the API, dashboards) run each request as
--     BEGIN; SET LOCAL ROLE spidi_reader; SELECT set_config('spidi.tenant', '<tenant>', true); ...
-- (queries.tenant_transaction does it) and see only that tenant's rows. The writer and the
-- server run as the connecting user, which must see every tenant:
--   * on the embedded PostgreSQL the connecting user is a superuser, which bypasses RLS;
--   * on an external PostgreSQL 14+ the connecting user owns the tables (FORCE makes owners
--     subject to RLS too) and is a member of spidi_writer, whose policy lets it see and write
--     every row. No BYPASSRLS is needed, which only a superuser could grant.
-- SET ROLE spidi_reader drops the spidi_writer membership for the transaction, so the tenant
-- policy is the only one left. Roles are cluster-wide: if the migrating user may not create
-- roles, a DBA runs the three statements named in the error below once per cluster.

DO $$
DECLARE
    hint text := format('as a superuser, once per cluster: CREATE ROLE spidi_reader NOLOGIN; '
                        'CREATE ROLE spidi_writer NOLOGIN; GRANT spidi_reader, spidi_writer TO %I;', current_user);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spidi_reader') THEN
        BEGIN
            CREATE ROLE spidi_reader NOLOGIN;
        EXCEPTION WHEN insufficient_privilege OR duplicate_object THEN
            NULL;  -- checked below
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spidi_writer') THEN
        BEGIN
            CREATE ROLE spidi_writer NOLOGIN;
        EXCEPTION WHEN insufficient_privilege OR duplicate_object THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spidi_reader')
       OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spidi_writer') THEN
        RAISE EXCEPTION 'roles spidi_reader/spidi_writer are missing and % may not create them', current_user
            USING HINT = hint;
    END IF;
    -- The connecting user must be able to SET ROLE spidi_reader and must inherit spidi_writer.
    BEGIN
        IF NOT pg_has_role(current_user, 'spidi_reader', 'MEMBER') THEN
            EXECUTE format('GRANT spidi_reader TO %I', current_user);
        END IF;
        IF NOT pg_has_role(current_user, 'spidi_writer', 'USAGE') THEN
            EXECUTE format('GRANT spidi_writer TO %I', current_user);
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE EXCEPTION '% must be a member of roles spidi_reader and spidi_writer and may not grant them itself',
            current_user USING HINT = hint;
    END;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO spidi_reader', current_schema());
END
$$;
GRANT SELECT ON tba_spd_room_type, dat_spd_room, dat_spd_room_attr, dat_spd_session, dat_spd_room_stats,
                dat_spd_alert_rule, dat_spd_alert_event TO spidi_reader;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['dat_spd_room', 'dat_spd_room_attr', 'dat_spd_session', 'dat_spd_room_stats',
                             'dat_spd_alert_rule', 'dat_spd_alert_event'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY spd_tenant_isolation ON %I '
                       'USING (unidad_negocio_id = current_setting(''spidi.tenant'', true)) '
                       'WITH CHECK (unidad_negocio_id = current_setting(''spidi.tenant'', true))', t);
        EXECUTE format('CREATE POLICY spd_writer_all ON %I TO spidi_writer USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;
