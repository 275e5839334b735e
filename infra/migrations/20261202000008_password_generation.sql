-- A login opens its session only while the password it checked is still the account's: it
-- reads `password_generation` with the hash, and store::start_family requires it unchanged. A
-- password reset adds one; replacing a hash by one of today's argon2 costs (the same password)
-- does not.
--
-- This replaces `rehashed_from`, which kept the replaced hash of the same password, made with
-- the cheaper costs, for good: a leaked copy of the table would be cracked from it, and
-- raising the costs would have bought nothing. It is emptied here and no longer written; the
-- column stays for binaries of the previous release that run beside this one during a rolling
-- upgrade (their logins read it).
ALTER TABLE credentials ADD COLUMN password_generation bigint NOT NULL DEFAULT 0;
UPDATE credentials SET rehashed_from = NULL WHERE rehashed_from IS NOT NULL;
