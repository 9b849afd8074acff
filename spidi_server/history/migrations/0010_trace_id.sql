-- Which REST request last wrote a row: the W3C trace id of the request (its traceparent's, or the
-- one the server gave it, answered in traceresponse and written on its log lines), so a row, the
-- request's log lines and the caller's trace can be joined.
--
-- The API sets spidi.trace_id in each transaction it runs (tenancy.tenant_transaction); a trigger
-- copies it into the rows written, whatever statement writes them, so no SQL of the API's has to
-- name the column. Writes without a trace id (the writer, the evaluator, an operator's psql) leave
-- the column as it was: an alert event keeps the trace of the request that acknowledged it.

ALTER TABLE tba_spd_room_type ADD COLUMN trace_id text;
ALTER TABLE dat_spd_room ADD COLUMN trace_id text;
ALTER TABLE dat_spd_alert_rule ADD COLUMN trace_id text;
ALTER TABLE dat_spd_alert_event ADD COLUMN trace_id text;

CREATE FUNCTION spd_stamp_trace_id() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- '' once set in an earlier transaction of the session, NULL when never set: both mean none.
    traced text := nullif(current_setting('spidi.trace_id', true), '');
BEGIN
    IF traced IS NOT NULL THEN
        NEW.trace_id := traced;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER spd_room_type_trace_id BEFORE INSERT OR UPDATE ON tba_spd_room_type
    FOR EACH ROW EXECUTE FUNCTION spd_stamp_trace_id();
CREATE TRIGGER spd_room_trace_id BEFORE INSERT OR UPDATE ON dat_spd_room
    FOR EACH ROW EXECUTE FUNCTION spd_stamp_trace_id();
CREATE TRIGGER spd_alert_rule_trace_id BEFORE INSERT OR UPDATE ON dat_spd_alert_rule
    FOR EACH ROW EXECUTE FUNCTION spd_stamp_trace_id();
CREATE TRIGGER spd_alert_event_trace_id BEFORE INSERT OR UPDATE ON dat_spd_alert_event
    FOR EACH ROW EXECUTE FUNCTION spd_stamp_trace_id();
