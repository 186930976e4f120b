-- A visitor's language (issue 17, PROTOCOL.md 10.24): a BCP 47 tag from
-- the widget's hello or the browser's Accept-Language, so agents can tell
-- nameless chats apart and write defaults in the visitor's language.
-- NULL: none known yet.
ALTER TABLE visitors ADD COLUMN lang TEXT;
