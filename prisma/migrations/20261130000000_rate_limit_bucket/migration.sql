-- The counter a key's own rate limit counts on: its own (NULL, the key's id) or that of the key it was
-- derived from. A key created by a rate-limited key, and a rotation's successor, share the counter of the
-- key they came from, so that minting keys does not multiply a limit. No foreign key: the counter is a
-- name, it outlives the key that first used it.
ALTER TABLE "api_keys" ADD COLUMN "rate_limit_bucket_id" UUID;

-- The column is claim-relevant (it names the counter the cached policy counts on): a change evicts the
-- key's cached entries on every instance. The rest is unchanged from 20261127000000_key_policies.
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
    IF TG_OP = 'UPDATE' AND ROW(OLD.id, OLD.token_hash, OLD.user_id, OLD.organization_id, OLD.scopes, OLD.expires_at, OLD.revoked_at,
                                OLD.allowed_cidrs, OLD.rate_limit_requests, OLD.rate_limit_window_seconds, OLD.rate_limit_bucket_id)
        IS NOT DISTINCT FROM ROW(NEW.id, NEW.token_hash, NEW.user_id, NEW.organization_id, NEW.scopes, NEW.expires_at, NEW.revoked_at,
                                 NEW.allowed_cidrs, NEW.rate_limit_requests, NEW.rate_limit_window_seconds, NEW.rate_limit_bucket_id) THEN
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
    IF TG_OP = 'UPDATE' AND ROW(OLD.id, OLD.external_id, OLD.name, OLD.slug, OLD.rate_limit_requests, OLD.rate_limit_window_seconds)
        IS NOT DISTINCT FROM ROW(NEW.id, NEW.external_id, NEW.name, NEW.slug, NEW.rate_limit_requests, NEW.rate_limit_window_seconds) THEN
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

-- The audit trail records the counter a key is put on (key.created of a derived key or a successor,
-- key.updated when rateLimit null forgets it). The rest is unchanged from 20261128000000_audit_events.
CREATE OR REPLACE FUNCTION "battra_audit_change"() RETURNS trigger AS $$
DECLARE
  key_fields text[] := ARRAY['user_id', 'organization_id', 'description', 'scopes', 'expires_at', 'revoked_at',
                             'replaced_by_id', 'allowed_cidrs', 'rate_limit_requests', 'rate_limit_window_seconds',
                             'rate_limit_bucket_id'];
  o jsonb := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END;
  n jsonb := CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END;
  subject jsonb := coalesce(n, o);
  changes jsonb;
  details jsonb;
  action text;
BEGIN
  IF TG_TABLE_NAME = 'api_keys' THEN
    IF TG_OP = 'INSERT' THEN
      PERFORM "battra_audit_record"('key.created', NEW.id, NEW.user_id, NEW.organization_id,
        "battra_audit_diff"('{}'::jsonb, n, key_fields), jsonb_build_object('hint', NEW.hint));
    ELSIF TG_OP = 'DELETE' THEN
      PERFORM "battra_audit_record"('key.deleted', OLD.id, OLD.user_id, OLD.organization_id,
        "battra_audit_diff"(o, '{}'::jsonb, key_fields), jsonb_build_object('hint', OLD.hint));
    ELSE
      changes := "battra_audit_diff"(o, n, key_fields);
      IF OLD.token_hash IS DISTINCT FROM NEW.token_hash THEN
        details := jsonb_build_object('secretChanged', true);
      END IF;
      IF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
        action := 'key.revoked';
        IF "battra_audit_actor"()->>'reason' = 'leaked' THEN action := 'key.leaked'; END IF;
      ELSIF OLD.replaced_by_id IS NULL AND NEW.replaced_by_id IS NOT NULL THEN
        action := 'key.rotated';
        details := coalesce(details, '{}'::jsonb) || jsonb_build_object('successorId', NEW.replaced_by_id);
      ELSIF changes IS NOT NULL OR details IS NOT NULL THEN
        action := 'key.updated';
      ELSIF OLD.last_used_at IS NULL AND NEW.last_used_at IS NOT NULL THEN
        action := 'key.first_used';
        details := jsonb_build_object('at', NEW.last_used_at);
      ELSE
        RETURN NULL; -- last_used_at moving on, updated_at, hint: nothing to record
      END IF;
      PERFORM "battra_audit_record"(action, NEW.id, NEW.user_id, NEW.organization_id, changes, details);
    END IF;
  ELSIF TG_TABLE_NAME = 'organization_memberships' THEN
    changes := "battra_audit_diff"(coalesce(o, '{}'::jsonb), coalesce(n, '{}'::jsonb), ARRAY['organization_id', 'user_id', 'role']);
    IF changes IS NULL THEN RETURN NULL; END IF;
    PERFORM "battra_audit_record"('membership.changed', NULL, (subject->>'user_id')::uuid, (subject->>'organization_id')::uuid, changes,
      jsonb_build_object('change', CASE TG_OP WHEN 'INSERT' THEN 'added' WHEN 'DELETE' THEN 'removed' ELSE 'changed' END));
  ELSIF TG_TABLE_NAME = 'users' THEN
    changes := "battra_audit_diff"(coalesce(o, '{}'::jsonb), coalesce(n, '{}'::jsonb), ARRAY['external_id', 'email', 'role', 'disabled_at']);
    IF changes IS NULL THEN RETURN NULL; END IF;
    PERFORM "battra_audit_record"(CASE TG_OP WHEN 'INSERT' THEN 'user.created' WHEN 'DELETE' THEN 'user.deleted' ELSE 'user.updated' END,
      NULL, (subject->>'id')::uuid, NULL, changes, NULL);
  ELSIF TG_TABLE_NAME = 'organizations' THEN
    changes := "battra_audit_diff"(coalesce(o, '{}'::jsonb), coalesce(n, '{}'::jsonb), ARRAY['external_id', 'name', 'slug', 'rate_limit_requests', 'rate_limit_window_seconds']);
    IF changes IS NULL THEN RETURN NULL; END IF;
    PERFORM "battra_audit_record"(CASE TG_OP WHEN 'INSERT' THEN 'organization.created' WHEN 'DELETE' THEN 'organization.deleted' ELSE 'organization.updated' END,
      NULL, NULL, (subject->>'id')::uuid, changes, NULL);
  END IF;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql;
