-- The operators' REST API (spidi_server/api) writes rooms, their attributes and the room-type
-- catalogue. It does so inside queries.tenant_transaction, i.e. as spidi_reader with
-- spidi.tenant set, so row-level security governs its writes as well as its reads: the
-- spd_tenant_isolation policy of 0003 has a WITH CHECK, so a row of another tenant can be neither
-- written nor reached. The API itself only lets spidi:admin tokens write; sessions, statistics
-- and alerts stay read-only to this role (the writer owns them).
GRANT INSERT, UPDATE ON dat_spd_room, dat_spd_room_attr, tba_spd_room_type TO spidi_reader;

-- Whether any live room of ANY tenant still uses a room type. Room types are global, but a
-- tenant-scoped reader sees only its own rooms, so it could not tell that another tenant still
-- needs the type it is about to delete. SECURITY DEFINER runs the check as the owner (who sees
-- every tenant: superuser, or member of spidi_writer) and hands back nothing but a boolean.
CREATE FUNCTION spd_room_type_in_use(p_type_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT EXISTS (SELECT 1 FROM dat_spd_room WHERE room_type_id = p_type_id AND deleted_at IS NULL)
$$;
