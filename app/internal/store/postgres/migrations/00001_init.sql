-- +goose Up
CREATE TABLE plans (
    name      text PRIMARY KEY,
    quota     bigint NOT NULL CHECK (quota >= 0),
    period    text   NOT NULL CHECK (period IN ('day', 'month')),
    max_items bigint NOT NULL CHECK (max_items >= 0)
);

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text        NOT NULL,
    plan           text        NOT NULL REFERENCES plans (name) ON UPDATE CASCADE,
    quota_override bigint      NULL CHECK (quota_override >= 0),
    -- items_version and items_count change only under the user row lock taken
    -- by UpdateItems, so they are always consistent with the items table and
    -- the total needs no count(*) over a set of up to a million rows.
    items_version  bigint      NOT NULL DEFAULT 0,
    items_count    bigint      NOT NULL DEFAULT 0,
    last_active_at timestamptz NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- RecentlyActiveUsers (system warmup): most recently active first, never
-- active last, newest first among equals.
CREATE INDEX users_recently_active_idx ON users (last_active_at DESC NULLS LAST, id DESC);

CREATE TABLE tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash       bytea       NOT NULL UNIQUE CHECK (length(hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NULL,
    revoked_at timestamptz NULL
);

CREATE INDEX tokens_user_id_idx ON tokens (user_id);

-- COLLATE "C": byte-wise comparison, the cheapest for equality probes and
-- the order LoadItems streams in.
CREATE TABLE items (
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    item    text COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, item)
);

CREATE TABLE usage (
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period_start date   NOT NULL,
    count        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, period_start)
);

-- One row per applied usage batch: its key makes ApplyUsageBatch idempotent.
CREATE TABLE usage_batches (
    key        text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    users      int    NOT NULL,
    total      bigint NOT NULL
);

-- +goose Down
DROP TABLE usage_batches;
DROP TABLE usage;
DROP TABLE items;
DROP TABLE tokens;
DROP TABLE users;
DROP TABLE plans;
