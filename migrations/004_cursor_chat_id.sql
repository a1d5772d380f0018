-- Commands remember the Cursor chat they continue.
ALTER TABLE commands ADD COLUMN cursor_chat_id TEXT;
