-- Issue 19: anomaly flags and the alert rule kind `anomaly` (spidi_server/alerting/anomaly.py).

-- 1. Kind `anomaly`. The check is rebuilt from the kinds it allows now plus 'anomaly', so this
--    migration keeps whatever kinds another migration added before it (the constraint's list is the
--    one place those kinds are written in SQL).
DO $$
DECLARE
    kinds text[];
BEGIN
    SELECT array_agg(DISTINCT m[1]) INTO kinds
    FROM pg_constraint AS c, regexp_matches(pg_get_constraintdef(c.oid), '''([a-z_]+)''', 'g') AS m
    WHERE c.conname = 'dat_spd_alert_rule_kind_chk' AND c.conrelid = 'dat_spd_alert_rule'::regclass;
    ALTER TABLE dat_spd_alert_rule DROP CONSTRAINT dat_spd_alert_rule_kind_chk;
    EXECUTE format('ALTER TABLE dat_spd_alert_rule ADD CONSTRAINT dat_spd_alert_rule_kind_chk CHECK (kind = ANY (%L::text[]))',
                   array_append(array_remove(kinds, 'anomaly'), 'anomaly'));
END
$$;

-- 2. What the evaluator reads of recent sessions each round of an anomaly rule: the joins and ends
--    of a room in the last minutes (storms, mass disconnects by app version, OS, IP prefix) and the
--    new sessions of one client (flapping). Both are range reads on one room.
CREATE INDEX dat_spd_session_room_started_idx ON dat_spd_session (room_id, started_at) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_session_room_ended_idx ON dat_spd_session (room_id, ended_at)
    WHERE ended_at IS NOT NULL AND deleted_at IS NULL;

-- 3. The flags an anomaly rule raised, each explaining itself: the metric, its value, the room's
--    baseline (median and MAD of the same hour of week; NULL for flags without one), the robust
--    z-score, the group (appVersion=..., os=..., ip=<prefix>, client=<user>/<clientId>) and the rule's
--    threshold. A flag is one row from the evaluation it rose in (started_at) to the one it cleared
--    in (ended_at, NULL while raised). Written by the evaluator (the connecting user), read by the
--    API under row-level security.
CREATE TABLE dat_spd_anomaly (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    unidad_negocio_id text NOT NULL,
    room_id           uuid NOT NULL,
    room_code         text,
    rule_id           uuid REFERENCES dat_spd_alert_rule (id),
    flag              text NOT NULL
                      CHECK (flag IN ('join_storm', 'leave_storm', 'latency_spike', 'mass_disconnect', 'flapping')),
    metric            text NOT NULL,
    group_key         text,
    value             double precision NOT NULL,
    baseline_median   double precision,
    baseline_mad      double precision,
    baseline_minutes  integer,
    z                 double precision,
    threshold         double precision,
    started_at        timestamptz NOT NULL,
    ended_at          timestamptz,
    details           jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user,
    deleted_at        timestamptz
);
CREATE INDEX dat_spd_anomaly_room_idx ON dat_spd_anomaly (room_id, started_at) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_anomaly_open_idx ON dat_spd_anomaly (rule_id) WHERE ended_at IS NULL AND deleted_at IS NULL;
GRANT SELECT ON dat_spd_anomaly TO spidi_reader;
ALTER TABLE dat_spd_anomaly ENABLE ROW LEVEL SECURITY;
ALTER TABLE dat_spd_anomaly FORCE ROW LEVEL SECURITY;
CREATE POLICY spd_tenant_isolation ON dat_spd_anomaly
    USING (unidad_negocio_id = current_setting('spidi.tenant', true));
CREATE POLICY spd_writer_all ON dat_spd_anomaly TO spidi_writer USING (true) WITH CHECK (true);
