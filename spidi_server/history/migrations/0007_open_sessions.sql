-- The sessions still open, by last heartbeat: what the writer's reconciliation sweep reads each
-- minute (sessions open in history whose node is gone). Partial, so it holds only the live
-- sessions and the orphans, not the whole history.
CREATE INDEX dat_spd_session_open_idx ON dat_spd_session (last_heartbeat_at, session_id)
    WHERE ended_at IS NULL AND deleted_at IS NULL;
