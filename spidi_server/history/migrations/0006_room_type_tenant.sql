-- Room types belong to a tenant (security review, issue 13, finding 7).
--
-- Until 0005 the room-type catalogue was shared by every tenant, and a room without a capacity of
-- its own takes its type's default: one tenant's administrator could change the capacity of
-- another tenant's rooms. From here on a room type is tenant data like a room: it carries
-- unidad_negocio_id, row-level security scopes it to the caller's tenant, its code is unique per
-- tenant among live types, and a room or an alert rule can only name a type of its own tenant
-- (composite foreign keys on (room_type_id, unidad_negocio_id)).
--
-- Existing rows are split by who uses them (rooms and alert rules, deleted ones included, so every
-- reference stays valid):
--   * a type used by one tenant becomes that tenant's;
--   * a type used by several tenants stays with the first of them (by name) and every other one
--     gets its own copy (same code, name, default capacity, audit and deletion columns), to which
--     that tenant's rooms and rules are repointed: each room keeps its effective capacity;
--   * a live type nobody uses is copied to every tenant that has a room or an alert rule (each of
--     them could use it before, and still can), or goes to tenant 'default' when there is none;
--   * a deleted type nobody uses goes to tenant 'default' (it is history only).

ALTER TABLE tba_spd_room_type ADD COLUMN unidad_negocio_id text;

CREATE TEMPORARY TABLE spd_0006_use ON COMMIT DROP AS
    SELECT DISTINCT room_type_id AS type_id, unidad_negocio_id AS tenant
    FROM (SELECT room_type_id, unidad_negocio_id FROM dat_spd_room WHERE room_type_id IS NOT NULL
          UNION ALL
          SELECT room_type_id, unidad_negocio_id FROM dat_spd_alert_rule WHERE room_type_id IS NOT NULL) AS u;

-- Unused live types: every known tenant (or 'default').
INSERT INTO spd_0006_use (type_id, tenant)
SELECT t.id, k.tenant
FROM tba_spd_room_type AS t
CROSS JOIN (SELECT unidad_negocio_id AS tenant FROM dat_spd_room
            UNION SELECT unidad_negocio_id FROM dat_spd_alert_rule
            UNION SELECT 'default' WHERE NOT EXISTS (SELECT 1 FROM dat_spd_room)
                                     AND NOT EXISTS (SELECT 1 FROM dat_spd_alert_rule)) AS k
WHERE t.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM spd_0006_use AS u WHERE u.type_id = t.id);

-- Unused deleted types: 'default'.
INSERT INTO spd_0006_use (type_id, tenant)
SELECT t.id, 'default' FROM tba_spd_room_type AS t
WHERE NOT EXISTS (SELECT 1 FROM spd_0006_use AS u WHERE u.type_id = t.id);

-- Which row each (type, tenant) pair ends up as: the original for the first tenant, a copy otherwise.
CREATE TEMPORARY TABLE spd_0006_map ON COMMIT DROP AS
    SELECT type_id, tenant,
           CASE WHEN row_number() OVER (PARTITION BY type_id ORDER BY tenant COLLATE "C") = 1
                THEN type_id ELSE gen_random_uuid() END AS new_id
    FROM spd_0006_use;

UPDATE tba_spd_room_type AS t SET unidad_negocio_id = m.tenant
FROM spd_0006_map AS m WHERE m.new_id = t.id;

-- The copies share their original's code: from here on a code is unique per tenant (below).
DROP INDEX tba_spd_room_type_code_uq;

INSERT INTO tba_spd_room_type (id, unidad_negocio_id, code, name, default_capacity,
                               created_at, created_by, updated_at, updated_by, deleted_at)
SELECT m.new_id, m.tenant, t.code, t.name, t.default_capacity,
       t.created_at, t.created_by, t.updated_at, t.updated_by, t.deleted_at
FROM spd_0006_map AS m JOIN tba_spd_room_type AS t ON t.id = m.type_id
WHERE m.new_id <> m.type_id;

-- The old foreign keys point at the original rows; they give way to the tenant-aware ones below.
ALTER TABLE dat_spd_room DROP CONSTRAINT dat_spd_room_room_type_id_fkey;
ALTER TABLE dat_spd_alert_rule DROP CONSTRAINT dat_spd_alert_rule_room_type_id_fkey;

UPDATE dat_spd_room AS r SET room_type_id = m.new_id
FROM spd_0006_map AS m
WHERE r.room_type_id = m.type_id AND r.unidad_negocio_id = m.tenant AND m.new_id <> m.type_id;

UPDATE dat_spd_alert_rule AS r SET room_type_id = m.new_id
FROM spd_0006_map AS m
WHERE r.room_type_id = m.type_id AND r.unidad_negocio_id = m.tenant AND m.new_id <> m.type_id;

ALTER TABLE tba_spd_room_type
    ALTER COLUMN unidad_negocio_id SET NOT NULL,
    ADD CONSTRAINT tba_spd_room_type_tenant_uq UNIQUE (id, unidad_negocio_id);

-- A code is unique per tenant among live types.
CREATE UNIQUE INDEX tba_spd_room_type_code_uq ON tba_spd_room_type (unidad_negocio_id, code)
    WHERE deleted_at IS NULL;

-- A room or a rule names a type of its own tenant, or none (MATCH SIMPLE: a NULL type is no
-- reference). Referential checks look past row-level security, so this holds for every writer.
ALTER TABLE dat_spd_room
    ADD CONSTRAINT dat_spd_room_room_type_fkey FOREIGN KEY (room_type_id, unidad_negocio_id)
        REFERENCES tba_spd_room_type (id, unidad_negocio_id);
ALTER TABLE dat_spd_alert_rule
    ADD CONSTRAINT dat_spd_alert_rule_room_type_fkey FOREIGN KEY (room_type_id, unidad_negocio_id)
        REFERENCES tba_spd_room_type (id, unidad_negocio_id);

-- Row-level security as on every other tenant table (0003): the API's reader sees and writes only
-- its tenant's types, the writer and the server see all. 0003/0004 granted SELECT, INSERT, UPDATE.
ALTER TABLE tba_spd_room_type ENABLE ROW LEVEL SECURITY;
ALTER TABLE tba_spd_room_type FORCE ROW LEVEL SECURITY;
CREATE POLICY spd_tenant_isolation ON tba_spd_room_type
    USING (unidad_negocio_id = current_setting('spidi.tenant', true))
    WITH CHECK (unidad_negocio_id = current_setting('spidi.tenant', true));
CREATE POLICY spd_writer_all ON tba_spd_room_type TO spidi_writer USING (true) WITH CHECK (true);

-- 0004's in-use check looked past row-level security because any tenant's rooms could use a
-- type; now only the type's own tenant's rooms can, which the caller sees. Left in place, it
-- would answer about another tenant's type ids.
DROP FUNCTION spd_room_type_in_use(uuid);
