-- Issue 18: the SLO breakdown. Which release (or OS) made latency worse: each room minute keeps,
-- besides its latency histogram, one per client app version and one per OS, bounded in number.
--
-- They live in the room minute's own row, as a jsonb column of dat_spd_room_stats:
--     {"appVersion": {"values": {"2.1.0": [hist], "2.0.9": [hist]}, "other": [hist]},
--      "os":         {"values": {"iOS 17": [hist], "": [hist]}, "other": [hist]}}
-- Each histogram has latency_hist's buckets (spd_latency_bounds() and the overflow). "other" holds
-- the heartbeats of the values beyond the top N (settings.slo_breakdown_top_n), the os "" those of
-- clients that sent no os (HELLO refuses an empty value, so no client's value is ""). A column
-- rather than a table of its own: the row already has the partitions, the row-level security, the
-- archive (retention adds the column to the archive table before it moves anything: 0011's
-- spd_archive_sync_columns) and the writer's one upsert per room minute.
ALTER TABLE dat_spd_room_stats ADD COLUMN latency_breakdown jsonb NOT NULL DEFAULT '{}';

-- A JSON histogram (an array of counts) as an array; NULL as an empty one.
CREATE FUNCTION spd_jsonb_hist(h jsonb) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY(SELECT x::bigint FROM jsonb_array_elements_text(h) WITH ORDINALITY AS e(x, i) ORDER BY i)
$$;

-- Two breakdowns added together (nodes' samples of a minute, a batch's to the stored one), label
-- by label, then bounded: per dimension the p_top values with the most heartbeats keep their
-- histograms (a tie goes to the smaller label in byte order), the others are added to "other".
-- Counts are conserved; only labels are given up. Folding depends on what is known when two
-- parts meet, so a value near the bound may keep some of a minute's heartbeats and give others
-- to "other": the totals stay exact.
CREATE FUNCTION spd_breakdown_add(a jsonb, b jsonb, p_top integer) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH dims AS (
        SELECT key AS dim, value AS part FROM jsonb_each(coalesce(a, '{}'))
        UNION ALL
        SELECT key, value FROM jsonb_each(coalesce(b, '{}'))
    ),
    parts AS (  -- label NULL: other
        SELECT d.dim, v.key AS label, spd_jsonb_hist(v.value) AS hist
        FROM dims AS d, jsonb_each(coalesce(d.part -> 'values', '{}')) AS v
        UNION ALL
        SELECT d.dim, NULL, spd_jsonb_hist(d.part -> 'other') FROM dims AS d WHERE d.part ? 'other'
    ),
    summed AS (
        SELECT dim, label, spd_hist_sum(hist) AS hist FROM parts GROUP BY dim, label
    ),
    ranked AS (
        SELECT dim, label, hist,
               row_number() OVER (PARTITION BY dim, label IS NULL
                                  ORDER BY (SELECT coalesce(sum(x), 0) FROM unnest(hist) AS x) DESC,
                                           label COLLATE "C") AS rank
        FROM summed
    ),
    kept AS (
        SELECT dim, CASE WHEN label IS NOT NULL AND rank <= p_top THEN label END AS label,
               spd_hist_sum(hist) AS hist
        FROM ranked GROUP BY 1, 2
    ),
    per_dim AS (
        SELECT dim,
               jsonb_build_object('values', coalesce(jsonb_object_agg(label, to_jsonb(hist))
                                                     FILTER (WHERE label IS NOT NULL), '{}'))
               || CASE WHEN bool_or(label IS NULL)
                       THEN jsonb_build_object('other', to_jsonb(max(hist) FILTER (WHERE label IS NULL)))
                       ELSE '{}' END AS part
        FROM kept GROUP BY dim
    )
    SELECT coalesce(jsonb_object_agg(dim, part), '{}') FROM per_dim
$$;

-- The breakdowns of many samples added up (bounded as spd_breakdown_add bounds).
CREATE AGGREGATE spd_breakdown_sum(jsonb, integer) (
    SFUNC = spd_breakdown_add, STYPE = jsonb, INITCOND = '{}', PARALLEL = SAFE
);

-- One dimension of a stored breakdown as rows: (label, histogram); label NULL is "other". The SLO
-- reads (history/sql/slos.py) count each group's good and total heartbeats off these.
CREATE FUNCTION spd_breakdown_groups(b jsonb, p_dim text) RETURNS TABLE (label text, hist bigint[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT v.key, spd_jsonb_hist(v.value) FROM jsonb_each(coalesce(b -> p_dim -> 'values', '{}')) AS v
    UNION ALL
    SELECT NULL, spd_jsonb_hist(b -> p_dim -> 'other') WHERE b -> p_dim ? 'other'
$$;
