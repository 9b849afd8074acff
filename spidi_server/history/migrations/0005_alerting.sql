-- Alerting (spidi_server/alerting): what a rule needs beyond 0001's columns, and what the
-- operators' API may change.
--
-- A rule's `expression` is always a CEL expression over a room's metrics: the built-in kinds
-- (capacity, latency, heartbeat) store the one their threshold produces, so the evaluator has a
-- single code path. `threshold` keeps the built-in's parameter for the API to show and edit;
-- `resolve_expression` is the hysteresis: a firing alert resolves only once it holds (built-ins
-- derive it from the threshold; a custom rule may give one, else it is `!(expression)`).
ALTER TABLE dat_spd_alert_rule
    ADD COLUMN threshold double precision,
    ADD COLUMN resolve_expression text,
    ADD CONSTRAINT dat_spd_alert_rule_kind_chk CHECK (kind IN ('capacity', 'latency', 'heartbeat', 'custom'));

-- The evaluator's events carry the rule's kind and severity and the room's code as they were at
-- the transition, so the history reads without joins and survives a rule's later edits.
ALTER TABLE dat_spd_alert_event
    ADD COLUMN kind text,
    ADD COLUMN severity text,
    ADD COLUMN room_code text;
CREATE INDEX dat_spd_alert_event_tenant_idx ON dat_spd_alert_event (unidad_negocio_id, at) WHERE deleted_at IS NULL;

-- The API (as spidi_reader, tenant set, row-level security in force) manages rules and
-- acknowledges events; the events themselves are written only by the history writer.
GRANT INSERT, UPDATE ON dat_spd_alert_rule TO spidi_reader;
GRANT UPDATE (acknowledged_by, acknowledged_at, updated_at, updated_by) ON dat_spd_alert_event TO spidi_reader;
