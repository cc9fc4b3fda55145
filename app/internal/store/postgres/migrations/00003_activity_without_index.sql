-- +goose NO TRANSACTION
-- +goose Up
-- Every applied usage batch moves its users' last_active_at, so an index on
-- it made each of those row updates a non-HOT update plus an index entry,
-- about a sixth of the sync's work in Postgres. Its one reader is the
-- system warmup's RecentlyActiveUsers, once per start: a top-N sort over
-- the table instead (about 150 ms for a million users), off the request
-- path. CONCURRENTLY (outside a transaction): instances still serving the
-- previous version are not held up while it drops.
DROP INDEX CONCURRENTLY IF EXISTS users_recently_active_idx;

-- +goose Down
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_recently_active_idx ON users (last_active_at DESC NULLS LAST, id DESC);
