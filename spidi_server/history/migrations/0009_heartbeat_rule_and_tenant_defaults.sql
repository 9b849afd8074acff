-- ADR-0001's heartbeat rule, and the defaults every tenant gets (issue 16, rows 4 and 6).
--
-- 1. Kind `heartbeat` now means the ADR's rule: an online session of the room (or a configurable
--    share of them) silent longer than `threshold` seconds (default 60). What it meant until now,
--    the heartbeat-rate drop (`staleSessions > 0 || heartbeatRateDrop > T`, T a ratio), stays
--    available as kind `heartbeat_rate`: every stored rule of kind heartbeat, deleted ones included,
--    becomes one. Its stored expressions are the rate-drop ones, so it keeps firing exactly as
--    before. Its past alert events are renamed too: their `kind` says what they measured.
ALTER TABLE dat_spd_alert_rule DROP CONSTRAINT dat_spd_alert_rule_kind_chk;
UPDATE dat_spd_alert_rule SET kind = 'heartbeat_rate' WHERE kind = 'heartbeat';
UPDATE dat_spd_alert_event SET kind = 'heartbeat_rate' WHERE kind = 'heartbeat';
ALTER TABLE dat_spd_alert_rule
    ADD CONSTRAINT dat_spd_alert_rule_kind_chk
        CHECK (kind IN ('capacity', 'latency', 'heartbeat', 'heartbeat_rate', 'custom')),
    -- A heartbeat rule's share of online sessions that must be silent (NULL: any one session).
    ADD COLUMN share double precision,
    ADD CONSTRAINT dat_spd_alert_rule_share_chk
        CHECK (share IS NULL OR (kind = 'heartbeat' AND share > 0 AND share <= 1));

-- 2. Defaults shipped: a tenant's room types (webrtc, chat, notification) and built-in rules
--    (capacity 80 %, latency 500 ms, heartbeat 60 s) are created the first time the tenant uses
--    the API. This table records that it happened, so defaults an operator deleted stay deleted:
--    seeding inserts the tenant's row first (ON CONFLICT DO NOTHING), and only the transaction
--    that inserted it adds the defaults; a concurrent first request waits on the row and then
--    finds it there. Row-level security as on every tenant table: the API seeds as spidi_reader
--    within its tenant.
CREATE TABLE spd_tenant_defaults (
    unidad_negocio_id text PRIMARY KEY,
    seeded_at         timestamptz NOT NULL DEFAULT now(),
    seeded_by         text NOT NULL DEFAULT current_user
);
GRANT SELECT, INSERT ON spd_tenant_defaults TO spidi_reader;
ALTER TABLE spd_tenant_defaults ENABLE ROW LEVEL SECURITY;
ALTER TABLE spd_tenant_defaults FORCE ROW LEVEL SECURITY;
CREATE POLICY spd_tenant_isolation ON spd_tenant_defaults
    USING (unidad_negocio_id = current_setting('spidi.tenant', true))
    WITH CHECK (unidad_negocio_id = current_setting('spidi.tenant', true));
CREATE POLICY spd_writer_all ON spd_tenant_defaults TO spidi_writer USING (true) WITH CHECK (true);

-- Tenants that already have room types or rules were set up by their operators before defaults
-- existed: they are marked as seeded, so an upgrade adds nothing they did not ask for.
INSERT INTO spd_tenant_defaults (unidad_negocio_id)
SELECT unidad_negocio_id FROM tba_spd_room_type
UNION SELECT unidad_negocio_id FROM dat_spd_alert_rule
ON CONFLICT DO NOTHING;
