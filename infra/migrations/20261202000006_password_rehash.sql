-- A password hash made with older argon2 parameters is replaced on the user's next successful
-- login (command-api/src/identity/routes.rs). `rehashed_from` keeps the hash it replaced, so a
-- login that verified the old hash while the new one was being written still opens its session
-- (store::start_family accepts either); a password reset clears it, so a login that checked
-- the hash from before the reset does not.
ALTER TABLE credentials ADD COLUMN rehashed_from text;
