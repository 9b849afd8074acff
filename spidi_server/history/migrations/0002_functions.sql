-- Read-side functions: histogram arithmetic, p95, room statistics rollups (1m/1h/1d) and the
-- session query. All are SECURITY INVOKER (the default), so row-level security applies to the
-- caller: a reader scoped to a tenant only ever aggregates that tenant's rows.

-- Element-wise sum of two histograms; NULL or shorter arrays count as zeros.
CREATE FUNCTION spd_array_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN a IS NULL OR cardinality(a) = 0 THEN b
        WHEN b IS NULL OR cardinality(b) = 0 THEN a
        ELSE ARRAY(
            SELECT coalesce(a[i], 0) + coalesce(b[i], 0)
            FROM generate_series(1, greatest(cardinality(a), cardinality(b))) AS i
            ORDER BY i)
    END
$$;

CREATE AGGREGATE spd_hist_sum(bigint[]) (SFUNC = spd_array_add, STYPE = bigint[], PARALLEL = SAFE);

-- Upper bounds (ms) of the latency histogram buckets; the last count is the overflow bucket.
-- Must equal spidi_server.stores.events.LATENCY_BUCKETS_MS (a test checks it); changing the
-- buckets takes a new migration.
CREATE FUNCTION spd_latency_bounds() RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '{5,10,25,50,75,100,150,200,300,500,750,1000,2000,5000}'::double precision[]
$$;

-- Quantile q (0..1) of a latency histogram, interpolating linearly inside the bucket that holds
-- it (as Prometheus' histogram_quantile does; the first bucket starts at 0). A quantile in the
-- overflow bucket reads as the highest finite bound. NULL for an empty histogram.
CREATE FUNCTION spd_hist_quantile(hist bigint[], q double precision) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    bounds   double precision[] := spd_latency_bounds();
    nbounds  integer := cardinality(spd_latency_bounds());
    total    bigint;
    target   double precision;
    cum      bigint := 0;
    below    bigint;
    lower_b  double precision := 0;
    i        integer;
BEGIN
    IF hist IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT sum(x) INTO total FROM unnest(hist) AS x;
    IF total IS NULL OR total = 0 THEN
        RETURN NULL;
    END IF;
    target := q * total;
    FOR i IN 1 .. cardinality(hist) LOOP
        below := cum;
        cum := cum + coalesce(hist[i], 0);
        IF cum >= target AND coalesce(hist[i], 0) > 0 THEN
            IF i > nbounds THEN
                RETURN bounds[nbounds];
            END IF;
            RETURN lower_b + (bounds[i] - lower_b) * (target - below) / hist[i];
        END IF;
        IF i <= nbounds THEN
            lower_b := bounds[i];
        END IF;
    END LOOP;
    RETURN bounds[nbounds];
END
$$;

-- Room statistics between p_from (inclusive) and p_to (exclusive) in buckets of '1m', '1h' or
-- '1d' (UTC-aligned), for one room or, with p_room_id NULL, every room the caller may see.
-- online_avg is time-weighted over the bucket's minutes inside [p_from, p_to): minutes without
-- a sample (nobody online, no activity) count as zero. latency_p95 comes from the merged
-- histogram of the bucket.
CREATE FUNCTION spd_room_stats(
    p_room_id uuid, p_from timestamptz, p_to timestamptz, p_bucket text DEFAULT '1m'
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
    WITH b AS (
        SELECT s.room_id AS rid,
               date_bin(step, s.ts_bucket, timestamptz '2000-01-01 00:00:00+00') AS bkt,
               s.*
        FROM dat_spd_room_stats AS s
        WHERE (p_room_id IS NULL OR s.room_id = p_room_id)
          AND s.ts_bucket >= p_from AND s.ts_bucket < p_to
          AND s.deleted_at IS NULL
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

-- Sessions that started in [p_from, p_to), optionally of one room and/or one user, newest first.
CREATE FUNCTION spd_sessions(
    p_from timestamptz, p_to timestamptz, p_room_id uuid DEFAULT NULL, p_user_id text DEFAULT NULL
) RETURNS SETOF dat_spd_session
LANGUAGE sql STABLE AS $$
    SELECT * FROM dat_spd_session AS s
    WHERE s.started_at >= p_from AND s.started_at < p_to
      AND (p_room_id IS NULL OR s.room_id = p_room_id)
      AND (p_user_id IS NULL OR s.user_id = p_user_id)
      AND s.deleted_at IS NULL
    ORDER BY s.started_at DESC
$$;
