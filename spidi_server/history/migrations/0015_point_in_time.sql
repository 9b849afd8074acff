-- Issue 19: point-in-time rosters and online timelines of a room, read from session intervals
-- (history/sql/pitr.py). Both ask "which sessions of room R overlap [t0, t1]", in two parts:
--     ended:  room_id = R AND ended_at > t0 AND started_at <= t1
--     open:   room_id = R AND ended_at IS NULL AND started_at <= t1
-- A GiST index on tstzrange(started_at, ended_at) would answer that in one probe, but it cannot
-- lead with room_id without the btree_gist extension (absent from the embedded PostgreSQL), and
-- across every room of every tenant the sessions live at one instant are far too many. So two
-- btrees per room. The first reads the room's sessions ending after t0 and checks started_at in
-- the index; partitions are by started_at, so for an old t1 only old partitions are read, and in
-- them few sessions end after t0. The second holds only the sessions still open. Their INCLUDEd
-- columns are all a timeline needs: it runs as an index-only scan. The bounds are plain columns
-- (not coalesce(ended_at, 'infinity')) because under row-level security the planner may use a
-- column's statistics but not an expression index's. benchmarks/pitr_bench.py measured it
-- (benchmarks/results/*-pitr.md).
CREATE INDEX dat_spd_session_room_end_idx ON dat_spd_session (room_id, ended_at, started_at)
    INCLUDE (last_heartbeat_at) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_session_room_open_idx ON dat_spd_session (room_id, started_at)
    INCLUDE (last_heartbeat_at) WHERE ended_at IS NULL AND deleted_at IS NULL;
-- The archive reads the same way (?archive=true). Partitions retention moved there before this
-- migration get the indexes now; later ones bring theirs along (SET SCHEMA keeps a partition's
-- indexes, and ATTACH adopts them as this parent's).
CREATE INDEX dat_spd_session_room_end_idx ON spd_archive.dat_spd_session (room_id, ended_at, started_at)
    INCLUDE (last_heartbeat_at) WHERE deleted_at IS NULL;
CREATE INDEX dat_spd_session_room_open_idx ON spd_archive.dat_spd_session (room_id, started_at)
    INCLUDE (last_heartbeat_at) WHERE ended_at IS NULL AND deleted_at IS NULL;
