-- The email a password-reset token was sent to (normalized). A token is good only while that
-- email still belongs to its user: once the owner moves the account to another email, whoever
-- still reads the old mailbox cannot use a token sent there. Tokens made before this column
-- have none and are checked as before; they expire within the reset token lifetime.
ALTER TABLE password_reset_tokens ADD COLUMN email text;
