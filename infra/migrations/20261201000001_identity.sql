-- Identity: credentials and tokens. None of this is a domain event: it never reaches the
-- events table, a topic or a read model.

-- One password hash (argon2id, PHC string) per user; written in the same transaction as the
-- user's UserRegistered event. The email to log in with is the user's claim in unique_claims.
CREATE TABLE credentials (
    user_id       uuid        PRIMARY KEY,
    password_hash text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A refresh-token family: one login and every token rotated from it. Revoking the family
-- (logout, reuse of a rotated token, password reset) ends them all.
CREATE TABLE refresh_families (
    id             uuid        PRIMARY KEY,
    user_id        uuid        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX refresh_families_live_idx ON refresh_families (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens, kept only as SHA-256 hashes. `rotated_at` is set when the token is used;
-- presenting it again is reuse.
CREATE TABLE refresh_tokens (
    token_hash bytea       PRIMARY KEY,
    family_id  uuid        NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry_idx ON refresh_tokens (expires_at);

-- Password-reset tokens, kept only as SHA-256 hashes; single use, expiring.
CREATE TABLE password_reset_tokens (
    token_hash bytea       PRIMARY KEY,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX password_reset_tokens_user_idx ON password_reset_tokens (user_id);

-- Messages for a mailer to deliver (no mail is sent by this system). A password-reset row
-- holds the token the user needs, so this table is as sensitive as a mailbox: a mailer
-- deletes rows once delivered, and rows older than a day are purged.
CREATE TABLE notification_outbox (
    id         bigserial   PRIMARY KEY,
    kind       text        NOT NULL,
    recipient  text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_outbox_created_idx ON notification_outbox (created_at);
