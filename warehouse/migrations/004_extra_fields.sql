-- Source fields the mapping does not read, kept as a JSON object when a source's
-- unknown_fields policy is `keep` (NULL otherwise): schema drift is visible, not lost.
ALTER TABLE customers ADD COLUMN _extra JSON;
ALTER TABLE orders ADD COLUMN _extra JSON;
ALTER TABLE feedback ADD COLUMN _extra JSON;
