-- Announce a key's old id too when its id is changed with SQL: instances cache it under the old one.
-- The rest of the function is unchanged from 20261125010000_auth_invalidation_triggers.
CREATE OR REPLACE FUNCTION "battra_auth_notify"() RETURNS trigger AS $$
DECLARE
  subject RECORD;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('battra_auth_invalidation', 'all');
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' THEN subject := OLD; ELSE subject := NEW; END IF;

  IF TG_TABLE_NAME = 'api_keys' THEN
    IF TG_OP = 'UPDATE' AND ROW(OLD.id, OLD.token_hash, OLD.user_id, OLD.organization_id, OLD.scopes, OLD.expires_at, OLD.revoked_at)
        IS NOT DISTINCT FROM ROW(NEW.id, NEW.token_hash, NEW.user_id, NEW.organization_id, NEW.scopes, NEW.expires_at, NEW.revoked_at) THEN
      RETURN NULL;
    END IF;
    -- A key whose id changes is cached under the old one.
    IF TG_OP = 'UPDATE' AND OLD.id IS DISTINCT FROM NEW.id THEN
      PERFORM pg_notify('battra_auth_invalidation', 'key:' || OLD.id);
    END IF;
    PERFORM pg_notify('battra_auth_invalidation', CASE WHEN TG_OP = 'INSERT' THEN 'key+:' ELSE 'key:' END || subject.id);
  ELSIF TG_TABLE_NAME = 'users' THEN
    IF TG_OP = 'INSERT' THEN RETURN NULL; END IF;
    IF TG_OP = 'UPDATE' AND ROW(OLD.id, OLD.external_id, OLD.email, OLD.role, OLD.disabled_at)
        IS NOT DISTINCT FROM ROW(NEW.id, NEW.external_id, NEW.email, NEW.role, NEW.disabled_at) THEN
      RETURN NULL;
    END IF;
    PERFORM pg_notify('battra_auth_invalidation', 'user:' || OLD.id);
  ELSIF TG_TABLE_NAME = 'organizations' THEN
    IF TG_OP = 'INSERT' THEN RETURN NULL; END IF;
    IF TG_OP = 'UPDATE' AND ROW(OLD.id, OLD.external_id, OLD.name, OLD.slug)
        IS NOT DISTINCT FROM ROW(NEW.id, NEW.external_id, NEW.name, NEW.slug) THEN
      RETURN NULL;
    END IF;
    PERFORM pg_notify('battra_auth_invalidation', 'org:' || OLD.id);
  ELSIF TG_TABLE_NAME = 'organization_memberships' THEN
    IF TG_OP = 'UPDATE' AND ROW(OLD.organization_id, OLD.user_id, OLD.role)
        IS NOT DISTINCT FROM ROW(NEW.organization_id, NEW.user_id, NEW.role) THEN
      RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
      PERFORM pg_notify('battra_auth_invalidation', 'member:' || OLD.organization_id || ':' || OLD.user_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
      PERFORM pg_notify('battra_auth_invalidation', 'member:' || NEW.organization_id || ':' || NEW.user_id);
    END IF;
  END IF;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
