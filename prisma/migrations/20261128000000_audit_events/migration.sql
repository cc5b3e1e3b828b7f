-- Audit trail and webhook outbox (issue 14).
--
-- audit_events is append-only and hash-chained: each row's hash is the SHA-256 of the previous row's hash
-- and of the row's own content (battra_audit_payload), so an edited, inserted or deleted row breaks the
-- chain at that row (`npm run audit -- verify`). Rows are written by deferred constraint triggers on
-- api_keys, users, organizations and organization_memberships, whoever makes the change (this service,
-- psql, Prisma Studio): they fire at COMMIT, after every other lock of the transaction was taken, and take
-- the chain's head row last, so appends are serialised without adding deadlocks, and a rolled-back change
-- records nothing. The actor is the transaction-local setting battra.actor (JSON) set by the service; when
-- absent, the database role: {"type":"database","role":<current_user>}.
--
-- Each event is also written, in the same transaction, to webhook_deliveries for every active endpoint
-- that asked for its action (the outbox; delivered by the service's worker).

CREATE TABLE "audit_events" (
  "id" UUID NOT NULL DEFAULT gen_random_uuid(),
  "seq" BIGINT NOT NULL,
  "at" TIMESTAMPTZ(6) NOT NULL DEFAULT clock_timestamp(),
  "action" TEXT NOT NULL,
  "actor" JSONB NOT NULL,
  "key_id" UUID,
  "user_id" UUID,
  "organization_id" UUID,
  "address" TEXT,
  "user_agent" TEXT,
  "changes" JSONB,
  "details" JSONB,
  "prev_hash" TEXT NOT NULL,
  "hash" TEXT NOT NULL,
  CONSTRAINT "audit_events_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "audit_events_seq_key" ON "audit_events"("seq");
CREATE INDEX "audit_events_key_id_action_idx" ON "audit_events"("key_id", "action");
CREATE INDEX "audit_events_user_id_seq_idx" ON "audit_events"("user_id", "seq");
CREATE INDEX "audit_events_organization_id_seq_idx" ON "audit_events"("organization_id", "seq");

-- The head of the chain (one row), locked by each append; and the anchors left by pruning.
CREATE TABLE "audit_chain" (
  "id" INTEGER NOT NULL DEFAULT 1,
  "last_seq" BIGINT NOT NULL DEFAULT 0,
  "last_hash" TEXT NOT NULL,
  CONSTRAINT "audit_chain_pkey" PRIMARY KEY ("id"),
  CONSTRAINT "audit_chain_single_row" CHECK ("id" = 1)
);
INSERT INTO "audit_chain" ("id", "last_seq", "last_hash") VALUES (1, 0, repeat('0', 64));

CREATE TABLE "audit_anchors" (
  "id" UUID NOT NULL DEFAULT gen_random_uuid(),
  "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT clock_timestamp(),
  "pruned_before" TIMESTAMPTZ(6) NOT NULL,
  "pruned_count" INTEGER NOT NULL,
  "first_seq" BIGINT NOT NULL,
  "prev_hash" TEXT NOT NULL,
  CONSTRAINT "audit_anchors_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "audit_anchors_first_seq_key" ON "audit_anchors"("first_seq");

-- Webhook endpoints. Their signing secrets are kept in a table of their own that schema.prisma does not
-- map (so Prisma Studio does not show them), returned once at creation and read only by the worker.
CREATE TABLE "webhook_endpoints" (
  "id" UUID NOT NULL DEFAULT gen_random_uuid(),
  "url" TEXT NOT NULL,
  "events" TEXT[] NOT NULL,
  "organization_id" UUID,
  "description" TEXT,
  "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
  "disabled_at" TIMESTAMPTZ(6),
  CONSTRAINT "webhook_endpoints_pkey" PRIMARY KEY ("id"),
  CONSTRAINT "webhook_endpoints_organization_id_fkey" FOREIGN KEY ("organization_id") REFERENCES "organizations"("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX "webhook_endpoints_organization_id_idx" ON "webhook_endpoints"("organization_id");

CREATE TABLE "webhook_endpoint_secrets" (
  "endpoint_id" UUID NOT NULL,
  "secret" TEXT NOT NULL,
  CONSTRAINT "webhook_endpoint_secrets_pkey" PRIMARY KEY ("endpoint_id"),
  CONSTRAINT "webhook_endpoint_secrets_endpoint_id_fkey" FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoints"("id") ON DELETE CASCADE ON UPDATE CASCADE
);

-- The outbox: one row per event and endpoint. `id` is the webhook-id (the idempotency id receivers
-- deduplicate on), the same on every attempt.
CREATE TABLE "webhook_deliveries" (
  "id" TEXT NOT NULL,
  "endpoint_id" UUID NOT NULL,
  "event_id" UUID NOT NULL,
  "event_type" TEXT NOT NULL,
  "payload" JSONB NOT NULL,
  "status" TEXT NOT NULL DEFAULT 'pending',
  "attempts" INTEGER NOT NULL DEFAULT 0,
  "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT clock_timestamp(),
  "next_attempt_at" TIMESTAMPTZ(6) NOT NULL DEFAULT clock_timestamp(),
  "locked_until" TIMESTAMPTZ(6),
  "claim" UUID,
  "delivered_at" TIMESTAMPTZ(6),
  "last_error" TEXT,
  "last_status" INTEGER,
  CONSTRAINT "webhook_deliveries_pkey" PRIMARY KEY ("id"),
  CONSTRAINT "webhook_deliveries_endpoint_id_fkey" FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoints"("id") ON DELETE CASCADE ON UPDATE CASCADE,
  CONSTRAINT "webhook_deliveries_status_check" CHECK ("status" IN ('pending', 'delivered', 'failed'))
);
CREATE INDEX "webhook_deliveries_status_next_attempt_at_idx" ON "webhook_deliveries"("status", "next_attempt_at");
CREATE INDEX "webhook_deliveries_endpoint_id_idx" ON "webhook_deliveries"("endpoint_id");

-- The content a row's hash covers, as canonical text (jsonb's text form is canonical; instants in
-- microseconds since the epoch, whatever the session's time zone).
CREATE OR REPLACE FUNCTION "battra_audit_payload"(e "audit_events") RETURNS text AS $$
  SELECT concat_ws(E'\n', e.seq::text, e.id::text,
    ((extract(epoch FROM e.at) * 1000000)::bigint)::text, e.action, e.actor::text,
    coalesce(e.key_id::text, ''), coalesce(e.user_id::text, ''), coalesce(e.organization_id::text, ''),
    coalesce(e.address, ''), coalesce(e.user_agent, ''), coalesce(e.changes::text, ''), coalesce(e.details::text, ''))
$$ LANGUAGE sql IMMUTABLE;

-- The actor of the transaction (battra.actor, JSON), or null when absent or not an object with a type.
CREATE OR REPLACE FUNCTION "battra_audit_actor"() RETURNS jsonb AS $$
DECLARE
  actor jsonb;
BEGIN
  BEGIN
    actor := nullif(current_setting('battra.actor', true), '')::jsonb;
  EXCEPTION WHEN others THEN
    RETURN NULL;
  END;
  IF actor IS NULL OR jsonb_typeof(actor) <> 'object' OR NOT (actor ? 'type') THEN RETURN NULL; END IF;
  RETURN actor;
END;
$$ LANGUAGE plpgsql STABLE;

-- Appends one event to the chain (and to the outbox of every endpoint that wants it). The actor is read
-- from battra.actor: {type: key|cli|system, keyId?, userId?, address?, userAgent?, reason?, url?, source?}.
-- A revocation whose actor says reason "leaked" is recorded as key.leaked, with url and source in details.
CREATE OR REPLACE FUNCTION "battra_audit_record"(p_action text, p_key_id uuid, p_user_id uuid, p_organization_id uuid,
                                                 p_changes jsonb, p_details jsonb) RETURNS uuid AS $$
DECLARE
  actor jsonb := coalesce("battra_audit_actor"(), jsonb_build_object('type', 'database', 'role', current_user::text));
  head RECORD;
  event "audit_events";
BEGIN
  event.id := gen_random_uuid();
  event.action := p_action;
  event.key_id := p_key_id;
  event.user_id := p_user_id;
  event.organization_id := p_organization_id;
  event.address := left(actor->>'address', 100);
  event.user_agent := left(actor->>'userAgent', 256);
  -- Where the request came from has columns of its own; the leak report's provenance goes to details.
  event.actor := actor - 'address' - 'userAgent' - 'url' - 'source';
  event.changes := p_changes;
  event.details := p_details;
  IF actor->>'reason' IS NOT NULL AND p_action IN ('key.revoked', 'key.leaked', 'key.updated') THEN
    event.details := coalesce(event.details, '{}'::jsonb) || jsonb_strip_nulls(jsonb_build_object(
      'reason', actor->>'reason', 'url', left(actor->>'url', 2048), 'source', left(actor->>'source', 256)));
  END IF;

  SELECT last_seq, last_hash INTO head FROM "audit_chain" WHERE id = 1 FOR UPDATE;
  event.at := clock_timestamp();
  event.seq := head.last_seq + 1;
  event.prev_hash := head.last_hash;
  event.hash := encode(sha256(convert_to(event.prev_hash || E'\n' || "battra_audit_payload"(event), 'UTF8')), 'hex');
  INSERT INTO "audit_events" SELECT event.*;
  UPDATE "audit_chain" SET last_seq = event.seq, last_hash = event.hash WHERE id = 1;

  INSERT INTO "webhook_deliveries" ("id", "endpoint_id", "event_id", "event_type", "payload")
  SELECT 'msg_' || replace(event.id::text, '-', '') || '_' || left(replace(w.id::text, '-', ''), 8), w.id, event.id, event.action,
         jsonb_build_object('type', event.action, 'timestamp', to_char(event.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'data', jsonb_strip_nulls(jsonb_build_object('id', event.id, 'action', event.action, 'actor', event.actor,
             'keyId', event.key_id, 'userId', event.user_id, 'organizationId', event.organization_id,
             'changes', event.changes, 'details', event.details)))
    FROM "webhook_endpoints" w
   WHERE w.disabled_at IS NULL
     AND (event.action = ANY (w.events) OR '*' = ANY (w.events))
     AND (w.organization_id IS NULL OR w.organization_id = event.organization_id);
  RETURN event.id;
END;
$$ LANGUAGE plpgsql;

-- {field: {before, after}} of the given fields that differ.
CREATE OR REPLACE FUNCTION "battra_audit_diff"(old_row jsonb, new_row jsonb, fields text[]) RETURNS jsonb AS $$
  SELECT nullif(coalesce(jsonb_object_agg(f, jsonb_build_object('before', coalesce(old_row->f, 'null'::jsonb), 'after', coalesce(new_row->f, 'null'::jsonb))), '{}'::jsonb), '{}'::jsonb)
    FROM unnest(fields) AS f
   WHERE coalesce(old_row->f, 'null'::jsonb) IS DISTINCT FROM coalesce(new_row->f, 'null'::jsonb)
$$ LANGUAGE sql IMMUTABLE;

-- What a change means, per table. Only claim-relevant fields (and a key's description) are recorded:
-- never token_hash (a change of it is noted as details.secretChanged), never a secret.
CREATE OR REPLACE FUNCTION "battra_audit_change"() RETURNS trigger AS $$
DECLARE
  key_fields text[] := ARRAY['user_id', 'organization_id', 'description', 'scopes', 'expires_at', 'revoked_at',
                             'replaced_by_id', 'allowed_cidrs', 'rate_limit_requests', 'rate_limit_window_seconds'];
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

CREATE CONSTRAINT TRIGGER "api_keys_battra_audit" AFTER INSERT OR UPDATE OR DELETE ON "api_keys"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "battra_audit_change"();
CREATE CONSTRAINT TRIGGER "users_battra_audit" AFTER INSERT OR UPDATE OR DELETE ON "users"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "battra_audit_change"();
CREATE CONSTRAINT TRIGGER "organizations_battra_audit" AFTER INSERT OR UPDATE OR DELETE ON "organizations"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "battra_audit_change"();
CREATE CONSTRAINT TRIGGER "organization_memberships_battra_audit" AFTER INSERT OR UPDATE OR DELETE ON "organization_memberships"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "battra_audit_change"();

-- Append-only: rows are never updated or deleted, except by `npm run audit -- prune`, which says so in the
-- transaction-local setting battra.audit_prune (and records an anchor so the chain still verifies).
CREATE OR REPLACE FUNCTION "battra_audit_guard"() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('battra.audit_prune', true) = 'on' THEN RETURN OLD; END IF;
  RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER "audit_events_append_only" BEFORE UPDATE OR DELETE ON "audit_events"
  FOR EACH ROW EXECUTE FUNCTION "battra_audit_guard"();
CREATE TRIGGER "audit_events_no_truncate" BEFORE TRUNCATE ON "audit_events"
  FOR EACH STATEMENT EXECUTE FUNCTION "battra_audit_guard"();
