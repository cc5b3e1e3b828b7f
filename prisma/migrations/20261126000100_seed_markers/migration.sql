-- What the dev seed has written, recorded in the seed's own transaction (src/db/seed.ts).
CREATE TABLE "seed_markers" (
    "name" TEXT NOT NULL,
    "seeded_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "seed_markers_pkey" PRIMARY KEY ("name")
);
