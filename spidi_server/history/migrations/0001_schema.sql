-- Spidi history schema: catalogue, rooms, sessions, per-minute room statistics, alerts, and the
-- event ledger that makes every writer batch idempotent.
--
-- Conventions: UUID keys; audit columns created_at/created_by/updated_at/updated_by; soft delete
-- through deleted_at (the live-row indexes are partial, WHERE deleted_at IS NULL); tenant data
-- carries unidad_negocio_id (row-level security keys on it, see 0003). Timestamps are timestamptz
-- and partitions are cut on UTC boundaries.

CREATE SCHEMA IF NOT EXISTS spd_archive;

-- Room types: a small global catalogue (not tenant data).
CREATE TABLE tba_spd_room_type (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code             text NOT NULL,
    name             text NOT NULL,
    default_capacity integer CHECK (default_capacity > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text NOT NULL DEFAULT current_user,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text NOT NULL DEFAULT current_user,
    deleted_at       timestamptz
);
CREATE UNIQUE INDEX tba_spd_room_type_code_uq ON tba_spd_room_type (code) WHERE deleted_at IS NULL;

-- Rooms: id is the server's room_id_for(tenant, code) (uuid5), so every node and the history
-- agree on it without a lookup.
CREATE TABLE dat_spd_room (
    id                uuid PRIMARY KEY,
    unidad_negocio_id text NOT NULL,
    code              text NOT NULL,
    name              text,
    room_type_id      uuid REFERENCES tba_spd_room_type (id),
    capacity          integer CHECK (capacity > 0),
    ttl_s             integer CHECK (ttl_s > 0),
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user,
    deleted_at        timestamptz
);
CREATE UNIQUE INDEX dat_spd_room_code_uq ON dat_spd_room (unidad_negocio_id, code) WHERE deleted_at IS NULL;

-- Free-form room attributes (EAV).
CREATE TABLE dat_spd_room_attr (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    room_id           uuid NOT NULL REFERENCES dat_spd_room (id),
    unidad_negocio_id text NOT NULL,
    attr_key          text NOT NULL,
    attr_value        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user,
    deleted_at        timestamptz
);
CREATE UNIQUE INDEX dat_spd_room_attr_key_uq ON dat_spd_room_attr (room_id, attr_key) WHERE deleted_at IS NULL;

-- Sessions: one row per presence session, upserted by (session_id, started_at) from its
-- started/checkpoint/ended events. Partitioned by month of started_at: a session that ends in
-- the next month stays in the partition it started in. No foreign key to dat_spd_room: history
-- must be written even for rooms that only ever existed in configuration or auto-creation.
CREATE TABLE dat_spd_session (
    session_id        uuid NOT NULL,
    started_at        timestamptz NOT NULL,
    room_id           uuid,
    room_code         text,
    unidad_negocio_id text NOT NULL,
    user_id           text,
    client_id         text,
    app_version       text,
    device            text,
    os                text,
    ip                text,
    node_id           text,
    ended_at          timestamptz,
    end_reason        text,
    heartbeat_count   bigint NOT NULL DEFAULT 0,
    last_heartbeat_at timestamptz,
    latency_sum       double precision NOT NULL DEFAULT 0,
    latency_count     bigint NOT NULL DEFAULT 0,
    latency_min       double precision,
    latency_max       double precision,
    latency_avg       double precision GENERATED ALWAYS AS
                      (CASE WHEN latency_count > 0 THEN latency_sum / latency_count END) STORED,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user,
    deleted_at        timestamptz,
    PRIMARY KEY (session_id, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX dat_spd_session_room_idx ON dat_spd_session (room_id) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_session_user_idx ON dat_spd_session (user_id) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_session_last_hb_idx ON dat_spd_session (last_heartbeat_at) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_session_tenant_idx ON dat_spd_session (unidad_negocio_id, started_at) WHERE deleted_at IS NULL;

-- Room statistics per minute, merged across nodes: every column is additive (sums, counts,
-- element-wise histogram sums) or a maximum, so samples from any number of nodes for the same
-- (room, minute) combine in any order. online_avg is itself additive: each node adds its own
-- average, and the room's average online is the sum over nodes (online_sum/online_samples alone
-- would give the per-node mean). Partitioned by quarter of ts_bucket.
CREATE TABLE dat_spd_room_stats (
    room_id           uuid NOT NULL,
    ts_bucket         timestamptz NOT NULL,
    unidad_negocio_id text NOT NULL,
    room_code         text,
    online_sum        bigint NOT NULL DEFAULT 0,
    online_samples    bigint NOT NULL DEFAULT 0,
    online_avg        double precision NOT NULL DEFAULT 0,
    online_max        integer NOT NULL DEFAULT 0,
    joins             bigint NOT NULL DEFAULT 0,
    leaves            bigint NOT NULL DEFAULT 0,
    timeouts          bigint NOT NULL DEFAULT 0,
    disconnects       bigint NOT NULL DEFAULT 0,
    latency_sum       double precision NOT NULL DEFAULT 0,
    latency_count     bigint NOT NULL DEFAULT 0,
    latency_hist      bigint[] NOT NULL DEFAULT '{}',
    latency_avg       double precision GENERATED ALWAYS AS
                      (CASE WHEN latency_count > 0 THEN latency_sum / latency_count END) STORED,
    node_samples      integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user,
    deleted_at        timestamptz,
    PRIMARY KEY (room_id, ts_bucket)
) PARTITION BY RANGE (ts_bucket);
CREATE INDEX dat_spd_room_stats_tenant_idx ON dat_spd_room_stats (unidad_negocio_id, ts_bucket) WHERE deleted_at IS NULL;

-- Alerting: rules (scope room, room type or whole tenant) and the state changes they produce.
CREATE TABLE dat_spd_alert_rule (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    unidad_negocio_id text NOT NULL,
    name              text NOT NULL,
    scope             text NOT NULL CHECK (scope IN ('room', 'room_type', 'tenant')),
    room_id           uuid REFERENCES dat_spd_room (id),
    room_type_id      uuid REFERENCES tba_spd_room_type (id),
    kind              text NOT NULL,
    expression        text NOT NULL,
    severity          text NOT NULL DEFAULT 'warning' CHECK (severity IN ('info', 'warning', 'critical')),
    for_seconds       integer NOT NULL DEFAULT 0 CHECK (for_seconds >= 0),
    channels          jsonb NOT NULL DEFAULT '[]',
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user,
    deleted_at        timestamptz,
    CHECK (scope <> 'room' OR room_id IS NOT NULL),
    CHECK (scope <> 'room_type' OR room_type_id IS NOT NULL)
);
CREATE INDEX dat_spd_alert_rule_tenant_idx ON dat_spd_alert_rule (unidad_negocio_id) WHERE deleted_at IS NULL;

CREATE TABLE dat_spd_alert_event (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id           uuid NOT NULL REFERENCES dat_spd_alert_rule (id),
    unidad_negocio_id text NOT NULL,
    room_id           uuid,
    state             text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    value             double precision,
    at                timestamptz NOT NULL DEFAULT now(),
    details           jsonb,
    acknowledged_by   text,
    acknowledged_at   timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL DEFAULT current_user,
    deleted_at        timestamptz
);
CREATE INDEX dat_spd_alert_event_rule_idx ON dat_spd_alert_event (rule_id, at) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_alert_event_room_idx ON dat_spd_alert_event (room_id, at) WHERE deleted_at IS NULL;

-- The event ledger: one row per applied event id, inserted in the same transaction as the
-- event's effect, so a replayed event (writer crash before XACK, reclaimed entries) changes
-- nothing. Partitioned by the day of the event's own time (not the time it was applied): the
-- same event id always lands in the same partition, so (event_id, event_day) is as unique as
-- event_id, and old days are dropped whole by retention instead of deleted row by row.
CREATE TABLE spd_event_ledger (
    event_id   uuid NOT NULL,
    event_day  date NOT NULL,
    kind       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, event_day)
) PARTITION BY RANGE (event_day);
