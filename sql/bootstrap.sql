-- =============================================================================
-- Migration bookkeeping. Applied before any migration; safe to run again.
-- =============================================================================

-- One row per applied migration; checksum is of the rendered SQL, so an
-- edited (instead of a new) migration is detected and refused.
CREATE TABLE IF NOT EXISTS pgmsg_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgmsg_migrations IS 'Applied schema migrations (sql/migrations/NNN_name.sql.j2).';

-- Apply one migration and record it in the same transaction: either both
-- happen or neither. The SQL travels as a bind parameter, never spliced.
CREATE OR REPLACE FUNCTION pgmsg_apply_migration(p_version integer, p_name text,
                                                 p_checksum text, p_sql text)
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    v_checksum text;
BEGIN
    -- Serialise concurrent deployers on the same database.
    PERFORM pg_advisory_xact_lock(hashtext('pgmsg_migrations'));
    SELECT checksum INTO v_checksum FROM pgmsg_migrations WHERE version = p_version;
    IF FOUND THEN
        IF v_checksum <> p_checksum THEN
            RAISE EXCEPTION USING ERRCODE = 'data_exception',
                MESSAGE = format('migration %s (%s) was changed after it was applied', p_version, p_name),
                HINT = 'applied migrations are immutable: revert the edit and add a new migration instead';
        END IF;
        RETURN false;
    END IF;
    EXECUTE p_sql;
    INSERT INTO pgmsg_migrations (version, name, checksum) VALUES (p_version, p_name, p_checksum);
    RETURN true;
END;
$$;
