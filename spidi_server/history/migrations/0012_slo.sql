-- Latency SLOs (issue 18) and the burn-rate alert rule kind that watches them.
--
-- An SLO promises that a share of the heartbeats of a room, of the rooms of a room type or of a
-- whole tenant has a client latency at or under `threshold_ms` over a rolling window of
-- `window_days`. Both forms the API accepts are stored as that share (`target`):
--   * objective 'share':      "share of heartbeats <= 150 ms >= 99 %"  -> target 0.99
--   * objective 'percentile': "p95 client latency <= 150 ms"           -> percentile 95, target 0.95
-- The threshold is one of the latency histogram's bucket bounds (spd_latency_bounds()), so the
-- share is read exactly off dat_spd_room_stats.latency_hist; the API refuses any other value.
CREATE TABLE dat_spd_slo (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    unidad_negocio_id text NOT NULL,
    name              text NOT NULL,
    scope             text NOT NULL CHECK (scope IN ('room', 'room_type', 'tenant')),
    room_id           uuid REFERENCES dat_spd_room (id),
    room_type_id      uuid,
    objective         text NOT NULL CHECK (objective IN ('percentile', 'share')),
    threshold_ms      double precision NOT NULL CHECK (threshold_ms > 0),
    percentile        double precision CHECK (percentile > 0 AND percentile < 100),
    target            double precision NOT NULL CHECK (target > 0 AND target < 1),
    window_days       integer NOT NULL DEFAULT 28 CHECK (window_days BETWEEN 1 AND 90),
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user,
    deleted_at        timestamptz,
    trace_id          text,
    CONSTRAINT dat_spd_slo_room_type_fkey FOREIGN KEY (room_type_id, unidad_negocio_id)
        REFERENCES tba_spd_room_type (id, unidad_negocio_id),
    CONSTRAINT dat_spd_slo_id_tenant_uq UNIQUE (id, unidad_negocio_id),
    CHECK (scope <> 'room' OR room_id IS NOT NULL),
    CHECK (scope <> 'room_type' OR room_type_id IS NOT NULL),
    CHECK ((objective = 'percentile') = (percentile IS NOT NULL))
);
CREATE INDEX dat_spd_slo_tenant_idx ON dat_spd_slo (unidad_negocio_id) WHERE deleted_at IS NULL;
-- Which REST request last wrote the row (0010).
CREATE TRIGGER spd_slo_trace_id BEFORE INSERT OR UPDATE ON dat_spd_slo
    FOR EACH ROW EXECUTE FUNCTION spd_stamp_trace_id();

-- Row-level security as on every tenant table (0003): the API manages SLOs as spidi_reader within
-- its tenant; the evaluator (the connecting user, in spidi_writer) reads every tenant's.
GRANT SELECT, INSERT, UPDATE ON dat_spd_slo TO spidi_reader;
ALTER TABLE dat_spd_slo ENABLE ROW LEVEL SECURITY;
ALTER TABLE dat_spd_slo FORCE ROW LEVEL SECURITY;
CREATE POLICY spd_tenant_isolation ON dat_spd_slo
    USING (unidad_negocio_id = current_setting('spidi.tenant', true))
    WITH CHECK (unidad_negocio_id = current_setting('spidi.tenant', true));
CREATE POLICY spd_writer_all ON dat_spd_slo TO spidi_writer USING (true) WITH CHECK (true);

-- Alert rules of kind slo_burn: multi-window, multi-burn-rate alerts on one SLO of the rule's own
-- tenant (composite key: a rule cannot name another tenant's SLO). burn_policy picks the windows:
-- 'page' (1 h and 5 m, default 14.4x) or 'ticket' (6 h and 30 m, default 6x); the threshold column
-- holds the burn-rate factor.
ALTER TABLE dat_spd_alert_rule DROP CONSTRAINT dat_spd_alert_rule_kind_chk;
ALTER TABLE dat_spd_alert_rule
    ADD CONSTRAINT dat_spd_alert_rule_kind_chk
        CHECK (kind IN ('capacity', 'latency', 'heartbeat', 'heartbeat_rate', 'custom', 'slo_burn')),
    ADD COLUMN slo_id uuid,
    ADD COLUMN burn_policy text CHECK (burn_policy IN ('page', 'ticket')),
    ADD CONSTRAINT dat_spd_alert_rule_slo_fkey FOREIGN KEY (slo_id, unidad_negocio_id)
        REFERENCES dat_spd_slo (id, unidad_negocio_id),
    ADD CONSTRAINT dat_spd_alert_rule_slo_chk
        CHECK ((kind = 'slo_burn') = (slo_id IS NOT NULL) AND (kind = 'slo_burn') = (burn_policy IS NOT NULL));
