-- Issue 19: point-in-time rosters and online timelines of a room, read from session intervals
-- (history/sql/pitr.py). Both ask "which sessions of room R overlap [t0, t1]":
--     room_id = R AND started_at <= t1 AND coalesce(ended_at, 'infinity') > t0
-- A GiST index on tstzrange(started_at, ended_at) would answer that in one probe, but it cannot
-- lead with room_id without the btree_gist extension (absent from the embedded PostgreSQL), and
-- across every room of every tenant the sessions live at one instant are far too many. Two
-- btrees per room instead, each holding both bounds: the planner walks the one whose range is the
-- narrower (sessions started by t1, or sessions ending after t0) and checks the other bound in
-- the index, so only the matching sessions' rows are read. The INCLUDEd columns are all a
-- timeline needs (the effective end of a session still open uses last_heartbeat_at): it runs as
-- an index-only scan. benchmarks/pitr_bench.py measured it (benchmarks/results/*-pitr.md).
CREATE INDEX dat_spd_session_room_start_idx
    ON dat_spd_session (room_id, started_at, (coalesce(ended_at, 'infinity'::timestamptz)))
    INCLUDE (ended_at, last_heartbeat_at) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_session_room_end_idx
    ON dat_spd_session (room_id, (coalesce(ended_at, 'infinity'::timestamptz)), started_at)
    INCLUDE (ended_at, last_heartbeat_at) WHERE deleted_at IS NULL;
-- The archive reads the same way (?archive=true). Partitions retention moved there before this
-- migration get the indexes now; later ones bring theirs along (SET SCHEMA keeps a partition's
-- indexes, and ATTACH adopts them as this parent's).
CREATE INDEX dat_spd_session_room_start_idx
    ON spd_archive.dat_spd_session (room_id, started_at, (coalesce(ended_at, 'infinity'::timestamptz)))
    INCLUDE (ended_at, last_heartbeat_at) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_session_room_end_idx
    ON spd_archive.dat_spd_session (room_id, (coalesce(ended_at, 'infinity'::timestamptz)), started_at)
    INCLUDE (ended_at, last_heartbeat_at) WHERE deleted_at IS NULL;
