-- Issue 16: the room-wide online maximum, and history in the archive readable under row-level
-- security (alert events included).

-- 1. online_max across nodes. Each node samples its own online count once a second; the largest
-- of the nodes' maxima is one node's figure, below the room's (two nodes holding 10 each peak at
-- 20, not 10) and even below online_avg (the sum of the nodes' averages). A room sample now also
-- carries the node's count at each second of the minute (online_secs); the writer adds them second
-- by second (spd_array_add, like the latency histograms) and online_max is the largest sum: the
-- room's count at one instant, whatever the number of nodes. Rows written before keep theirs.
ALTER TABLE dat_spd_room_stats ADD COLUMN online_secs integer[] NOT NULL DEFAULT '{}';

-- The largest element of an array (0 for an empty or NULL one).
CREATE FUNCTION spd_array_max(a bigint[]) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(max(x), 0)::integer FROM unnest(a) AS x
$$;

-- 2. The archive as tables of their own. Retention (history/retention.py) used to move old
-- session and room-statistics partitions into spd_archive as loose tables: no grant, no policy,
-- unreachable for the API. They now become partitions of archive parents that look like the hot
-- tables, with the same row-level security, so a tenant reads its archived rows (the API's
-- ?archive=true) and never another's. The reader gets SELECT on the parents only: an archived
-- partition named directly stays out of reach, as hot partitions do. Alert events are few and
-- keyed by id (acknowledgements, replays): retention moves their rows rather than partitions.
--
-- A later migration that adds a column to a hot history table needs nothing more: retention adds
-- the hot table's new columns to its archive table before it moves anything
-- (spd_archive_sync_columns).
CREATE TABLE spd_archive.dat_spd_session (LIKE dat_spd_session INCLUDING DEFAULTS INCLUDING GENERATED)
    PARTITION BY RANGE (started_at);
CREATE TABLE spd_archive.dat_spd_room_stats (LIKE dat_spd_room_stats INCLUDING DEFAULTS INCLUDING GENERATED)
    PARTITION BY RANGE (ts_bucket);
CREATE TABLE spd_archive.dat_spd_alert_event (
    LIKE dat_spd_alert_event INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING INDEXES
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['dat_spd_session', 'dat_spd_room_stats', 'dat_spd_alert_event'] LOOP
        EXECUTE format('ALTER TABLE spd_archive.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE spd_archive.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY spd_tenant_isolation ON spd_archive.%I '
                       'USING (unidad_negocio_id = current_setting(''spidi.tenant'', true))', t);
        EXECUTE format('CREATE POLICY spd_writer_all ON spd_archive.%I TO spidi_writer USING (true) WITH CHECK (true)', t);
        EXECUTE format('GRANT SELECT ON spd_archive.%I TO spidi_reader', t);
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA spd_archive TO spidi_reader;

-- Columns of the hot table p_table that its archive table lacks are added to the archive (nullable,
-- with the hot default): the archive always has every column the hot table has.
CREATE FUNCTION spd_archive_sync_columns(p_table text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS typ, pg_get_expr(d.adbin, d.adrelid) AS def
        FROM pg_attribute AS a
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = p_table::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
          AND NOT EXISTS (SELECT 1 FROM pg_attribute AS b
                          WHERE b.attrelid = format('spd_archive.%I', p_table)::regclass
                            AND b.attname = a.attname AND NOT b.attisdropped)
        ORDER BY a.attnum
    LOOP
        EXECUTE format('ALTER TABLE spd_archive.%I ADD COLUMN %I %s', p_table, col.attname, col.typ)
            || coalesce(' DEFAULT ' || col.def, '');
    END LOOP;
END
$$;

-- Attach spd_archive.p_partition (a partition retention detached from the hot p_table and moved
-- into the archive schema) to the archive's p_table for [p_from, p_to). A column the archive has
-- and the partition lacks (a table archived before the column existed) is added to the partition
-- with its default first. ATTACH checks the rows against the bounds: one read of the partition.
CREATE FUNCTION spd_archive_attach(p_table text, p_partition text, p_from timestamptz, p_to timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    col record;
BEGIN
    PERFORM spd_archive_sync_columns(p_table);
    FOR col IN
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS typ, pg_get_expr(d.adbin, d.adrelid) AS def,
               a.attnotnull
        FROM pg_attribute AS a
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = format('spd_archive.%I', p_table)::regclass AND a.attnum > 0
          AND NOT a.attisdropped AND a.attgenerated = ''
          AND NOT EXISTS (SELECT 1 FROM pg_attribute AS b
                          WHERE b.attrelid = format('spd_archive.%I', p_partition)::regclass
                            AND b.attname = a.attname AND NOT b.attisdropped)
        ORDER BY a.attnum
    LOOP
        EXECUTE format('ALTER TABLE spd_archive.%I ADD COLUMN %I %s', p_partition, col.attname, col.typ)
            || coalesce(' DEFAULT ' || col.def, '')
            || CASE WHEN col.attnotnull AND col.def IS NOT NULL THEN ' NOT NULL' ELSE '' END;
    END LOOP;
    EXECUTE format('ALTER TABLE spd_archive.%I ATTACH PARTITION spd_archive.%I FOR VALUES FROM (%L) TO (%L)',
                   p_table, p_partition, p_from, p_to);
END
$$;

-- Move the alert events older than p_before into the archive; how many moved.
CREATE FUNCTION spd_archive_alert_events(p_before timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cols text;
    moved bigint;
BEGIN
    PERFORM spd_archive_sync_columns('dat_spd_alert_event');
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
    FROM pg_attribute
    WHERE attrelid = 'dat_spd_alert_event'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('WITH moved AS (DELETE FROM dat_spd_alert_event WHERE at < $1 RETURNING *) '
                   'INSERT INTO spd_archive.dat_spd_alert_event (%s) SELECT %s FROM moved ON CONFLICT DO NOTHING',
                   cols, cols) USING p_before;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

-- Tables archived before this migration join their archive parents.
DO $$
DECLARE
    r record;
    m text[];
    lo date;
    hi date;
BEGIN
    FOR r IN
        SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'spd_archive' AND c.relkind = 'r' AND NOT c.relispartition
        ORDER BY c.relname
    LOOP
        m := regexp_match(r.relname, '^(dat_spd_session|dat_spd_room_stats)_p(\d{4})_(\d{2}|q[1-4])$');
        CONTINUE WHEN m IS NULL;
        IF m[1] = 'dat_spd_session' AND m[3] ~ '^\d{2}$' THEN
            lo := make_date(m[2]::int, m[3]::int, 1);
            hi := lo + interval '1 month';
        ELSIF m[1] = 'dat_spd_room_stats' AND m[3] ~ '^q' THEN
            lo := make_date(m[2]::int, 3 * (substr(m[3], 2)::int - 1) + 1, 1);
            hi := lo + interval '3 months';
        ELSE
            CONTINUE;
        END IF;
        PERFORM spd_archive_attach(m[1], r.relname, (lo::timestamp AT TIME ZONE 'UTC'),
                                   (hi::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END
$$;

-- 3. The reads, with the archive on request (p_archive): hot rows and archived ones together (a
-- period is in one or the other, never both). Row-level security applies to both.
DROP FUNCTION spd_room_stats(uuid, timestamptz, timestamptz, text);
CREATE FUNCTION spd_room_stats(
    p_room_id uuid, p_from timestamptz, p_to timestamptz, p_bucket text DEFAULT '1m',
    p_archive boolean DEFAULT false
) RETURNS TABLE (
    room_id     uuid,
    bucket      timestamptz,
    online_avg  double precision,
    online_max  integer,
    joins       bigint,
    leaves      bigint,
    timeouts    bigint,
    disconnects bigint,
    latency_avg double precision,
    latency_p95 double precision,
    latency_count bigint,
    latency_hist bigint[]
)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    step interval;
BEGIN
    step := CASE p_bucket WHEN '1m' THEN interval '1 minute' WHEN '1h' THEN interval '1 hour'
                          WHEN '1d' THEN interval '1 day' END;
    IF step IS NULL THEN
        RAISE EXCEPTION 'bucket must be 1m, 1h or 1d, got %', p_bucket USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH src AS (
        SELECT s.room_id, s.ts_bucket, s.online_avg, s.online_max, s.joins, s.leaves, s.timeouts,
               s.disconnects, s.latency_sum, s.latency_count, s.latency_hist
        FROM dat_spd_room_stats AS s
        WHERE (p_room_id IS NULL OR s.room_id = p_room_id)
          AND s.ts_bucket >= p_from AND s.ts_bucket < p_to
          AND s.deleted_at IS NULL
        UNION ALL
        SELECT s.room_id, s.ts_bucket, s.online_avg, s.online_max, s.joins, s.leaves, s.timeouts,
               s.disconnects, s.latency_sum, s.latency_count, s.latency_hist
        FROM spd_archive.dat_spd_room_stats AS s
        WHERE p_archive
          AND (p_room_id IS NULL OR s.room_id = p_room_id)
          AND s.ts_bucket >= p_from AND s.ts_bucket < p_to
          AND s.deleted_at IS NULL
    ), b AS (
        SELECT src.room_id AS rid,
               date_bin(step, src.ts_bucket, timestamptz '2000-01-01 00:00:00+00') AS bkt,
               src.*
        FROM src
    ), agg AS (
        SELECT rid, bkt,
               sum(b.online_avg) AS online_total,
               max(b.online_max) AS online_max,
               sum(b.joins)::bigint AS joins, sum(b.leaves)::bigint AS leaves,
               sum(b.timeouts)::bigint AS timeouts, sum(b.disconnects)::bigint AS disconnects,
               sum(b.latency_sum) AS latency_sum, sum(b.latency_count)::bigint AS latency_count,
               spd_hist_sum(b.latency_hist) AS hist
        FROM b GROUP BY rid, bkt
    )
    SELECT agg.rid, agg.bkt,
           agg.online_total / greatest(1.0, extract(epoch FROM
               least(agg.bkt + step, p_to) - greatest(agg.bkt, p_from)) / 60.0)::double precision,
           agg.online_max, agg.joins, agg.leaves, agg.timeouts, agg.disconnects,
           CASE WHEN agg.latency_count > 0 THEN agg.latency_sum / agg.latency_count END,
           spd_hist_quantile(agg.hist, 0.95),
           agg.latency_count,
           agg.hist
    FROM agg
    ORDER BY agg.rid, agg.bkt;
END
$$;

-- Archived session rows come back as hot rows by column name (jsonb), so the two tables need not
-- list their columns in the same order.
DROP FUNCTION spd_sessions(timestamptz, timestamptz, uuid, text);
CREATE FUNCTION spd_sessions(
    p_from timestamptz, p_to timestamptz, p_room_id uuid DEFAULT NULL, p_user_id text DEFAULT NULL,
    p_archive boolean DEFAULT false
) RETURNS SETOF dat_spd_session
LANGUAGE sql STABLE AS $$
    SELECT * FROM (
        SELECT * FROM dat_spd_session AS s
        WHERE s.started_at >= p_from AND s.started_at < p_to
          AND (p_room_id IS NULL OR s.room_id = p_room_id)
          AND (p_user_id IS NULL OR s.user_id = p_user_id)
          AND s.deleted_at IS NULL
        UNION ALL
        SELECT (jsonb_populate_record(NULL::dat_spd_session, to_jsonb(a))).*
        FROM spd_archive.dat_spd_session AS a
        WHERE p_archive
          AND a.started_at >= p_from AND a.started_at < p_to
          AND (p_room_id IS NULL OR a.room_id = p_room_id)
          AND (p_user_id IS NULL OR a.user_id = p_user_id)
          AND a.deleted_at IS NULL
    ) AS s
    ORDER BY s.started_at DESC
$$;
