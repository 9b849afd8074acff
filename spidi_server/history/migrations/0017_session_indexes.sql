-- Issue 15: three of dat_spd_session's ten indexes answer nothing another does not, and every
-- session's insert, end and heartbeat-aggregate update pays for each index it touches (about 25 of
-- the ~30 us PostgreSQL spends per session row goes to index entries;
-- benchmarks/results/*-connect-backend-ab.md).
--   room_idx (room_id): the leading column of room_started_idx (room_id, started_at), same predicate;
--   room_ended_idx (room_id, ended_at) WHERE ended_at IS NOT NULL: room_end_idx (room_id, ended_at,
--     started_at) serves the same range reads (the anomaly evaluator's ends and drops of a room);
--   last_hb_idx (last_heartbeat_at): no query reads sessions by last heartbeat but the sweep, whose
--     reads of open sessions open_idx (last_heartbeat_at, session_id) serves.
DROP INDEX IF EXISTS dat_spd_session_room_idx;
DROP INDEX IF EXISTS dat_spd_session_room_ended_idx;
DROP INDEX IF EXISTS dat_spd_session_last_hb_idx;
