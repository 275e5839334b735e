-- Storage of the Confluent-compatible schema registry (`schemas/src/registry`).
-- Several registry instances may share these tables: schema ids come from one sequence and a
-- schema's normalised text is unique, so the same schema always gets the same id.
CREATE TABLE sr_schemas (
    id          serial      PRIMARY KEY,
    fingerprint bytea       NOT NULL UNIQUE,
    schema_type text        NOT NULL DEFAULT 'AVRO',
    schema      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A subject's versions; deletion is soft, and a deleted version keeps its number.
CREATE TABLE sr_subject_versions (
    subject    text        NOT NULL,
    version    integer     NOT NULL CHECK (version > 0),
    schema_id  integer     NOT NULL REFERENCES sr_schemas (id),
    deleted    boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);

-- Compatibility levels; the empty subject is the global level.
CREATE TABLE sr_config (
    subject       text PRIMARY KEY,
    compatibility text NOT NULL
);
