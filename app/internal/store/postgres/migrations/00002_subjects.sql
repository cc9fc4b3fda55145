-- +goose Up
-- A user signs in with the application's own login (a JWT) as the pair
-- (issuer, subject). The primary key makes the first sign-in of a subject
-- create one user however many instances race on it.
CREATE TABLE subjects (
    issuer  text   NOT NULL,
    subject text   NOT NULL,
    user_id bigint NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (issuer, subject)
);

-- +goose Down
DROP TABLE subjects;
