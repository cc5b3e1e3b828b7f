-- Leaked keys (GitHub secret scanning, the public leak-report route). On the key, for its owner: why it was
-- revoked (NULL: by its owner, an operator or SQL; 'leaked': by a leak report) and the report itself
-- (reporter, where the key was found, when). Per organization: whether a leak report revokes the key at
-- once (the default) or only flags it ("report only", for operators who rotate by hand).
-- None of these columns is claim-relevant: revoked_at, which a revocation sets, already announces the
-- change through battra_auth_notify, so the trigger function is left as it is.
CREATE TYPE "revocation_reason" AS ENUM ('leaked');

ALTER TABLE "api_keys" ADD COLUMN "revoked_reason" "revocation_reason",
ADD COLUMN "leak_report" JSONB;

ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_leak_report_check" CHECK (
  "leak_report" IS NULL OR jsonb_typeof("leak_report") = 'object'
);

ALTER TABLE "organizations" ADD COLUMN "leak_auto_revoke" BOOLEAN NOT NULL DEFAULT true;
