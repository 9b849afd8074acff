-- Issue 19: signed attendance exports, chained per tenant (spidi_server/exports.py).
--
-- Each export carries seq (1, 2, ... per tenant) and the hash of the tenant's previous export.
-- spd_export_chain holds each tenant's head (last seq and its hash): an export locks its tenant's
-- row (SELECT ... FOR UPDATE), signs, moves the head and records itself in dat_spd_export in the
-- same transaction, so two concurrent exports cannot claim the same predecessor; the primary key
-- (tenant, seq) of dat_spd_export refuses a second claim of a seq whatever the code does.
-- Both are the API's to write (as spidi_reader, inside tenant_transaction) under row-level
-- security: a tenant reads and moves only its own chain.

CREATE TABLE spd_export_chain (
    unidad_negocio_id text PRIMARY KEY,
    seq               bigint NOT NULL CHECK (seq >= 0),
    head_hash         text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user
);

CREATE TABLE dat_spd_export (
    unidad_negocio_id text NOT NULL,
    seq               bigint NOT NULL CHECK (seq >= 1),
    hash              text NOT NULL,
    prev_hash         text,
    room_id           uuid NOT NULL,
    period_from       timestamptz NOT NULL,
    period_to         timestamptz NOT NULL,
    format            text NOT NULL CHECK (format IN ('csv', 'json')),
    row_count         integer NOT NULL,
    key_id            text NOT NULL,
    generated_at      timestamptz NOT NULL,
    trace_id          text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    PRIMARY KEY (unidad_negocio_id, seq)
);

CREATE TRIGGER spd_export_trace_id BEFORE INSERT OR UPDATE ON dat_spd_export
    FOR EACH ROW EXECUTE FUNCTION spd_stamp_trace_id();

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['spd_export_chain', 'dat_spd_export'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY spd_tenant_isolation ON %I '
                       'USING (unidad_negocio_id = current_setting(''spidi.tenant'', true)) '
                       'WITH CHECK (unidad_negocio_id = current_setting(''spidi.tenant'', true))', t);
        EXECUTE format('CREATE POLICY spd_writer_all ON %I TO spidi_writer USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE ON spd_export_chain TO spidi_reader;
GRANT SELECT, INSERT ON dat_spd_export TO spidi_reader;
