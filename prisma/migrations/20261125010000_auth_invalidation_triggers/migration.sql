-- Every change that can alter a key's claims is announced on the channel battra_auth_invalidation,
-- whoever makes it (the service, another instance, psql, Prisma Studio), so that every instance
-- evicts exactly the cache entries it affects. Payloads: key:<id>, key+:<id> (a new key),
-- user:<id>, org:<id>, member:<organization id>:<user id>, all.
-- Changes that cannot alter claims (last_used_at, descriptions, hints, updated_at) stay silent, so the
-- usage flush does not empty every cache it touches.

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
    IF TG_OP = 'UPDATE' AND ROW(OLD.token_hash, OLD.user_id, OLD.organization_id, OLD.scopes, OLD.expires_at, OLD.revoked_at)
        IS NOT DISTINCT FROM ROW(NEW.token_hash, NEW.user_id, NEW.organization_id, NEW.scopes, NEW.expires_at, NEW.revoked_at) THEN
      RETURN NULL;
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

CREATE TRIGGER "api_keys_battra_auth_notify" AFTER INSERT OR UPDATE OR DELETE ON "api_keys"
  FOR EACH ROW EXECUTE FUNCTION "battra_auth_notify"();
CREATE TRIGGER "users_battra_auth_notify" AFTER INSERT OR UPDATE OR DELETE ON "users"
  FOR EACH ROW EXECUTE FUNCTION "battra_auth_notify"();
CREATE TRIGGER "organizations_battra_auth_notify" AFTER INSERT OR UPDATE OR DELETE ON "organizations"
  FOR EACH ROW EXECUTE FUNCTION "battra_auth_notify"();
CREATE TRIGGER "organization_memberships_battra_auth_notify" AFTER INSERT OR UPDATE OR DELETE ON "organization_memberships"
  FOR EACH ROW EXECUTE FUNCTION "battra_auth_notify"();

CREATE TRIGGER "api_keys_battra_auth_notify_truncate" AFTER TRUNCATE ON "api_keys"
  FOR EACH STATEMENT EXECUTE FUNCTION "battra_auth_notify"();
CREATE TRIGGER "users_battra_auth_notify_truncate" AFTER TRUNCATE ON "users"
  FOR EACH STATEMENT EXECUTE FUNCTION "battra_auth_notify"();
CREATE TRIGGER "organizations_battra_auth_notify_truncate" AFTER TRUNCATE ON "organizations"
  FOR EACH STATEMENT EXECUTE FUNCTION "battra_auth_notify"();
CREATE TRIGGER "organization_memberships_battra_auth_notify_truncate" AFTER TRUNCATE ON "organization_memberships"
  FOR EACH STATEMENT EXECUTE FUNCTION "battra_auth_notify"();
