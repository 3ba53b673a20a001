-- Submitted captures (the attestation, the session's wrapped data key and its encrypted media),
-- the durable job queue, and webhook endpoints with their deliveries.

-- One per submitted session: its AES-256 data key, wrapped by the master key master_kid names.
-- Deleting the row (redaction) makes the session's media unreadable at once, backups included.
create table session_key (
    session_id text primary key references session (session_id),
    master_kid text not null,
    wrapped_key bytea not null,
    created_at bigint not null
);

-- Images as uploaded, sealed with the session's data key (nonce || ciphertext || tag).
create table media (
    session_id text not null references session (session_id),
    role text not null,
    idx integer not null,
    sha256 text not null,
    sealed bytea not null,
    created_at bigint not null,
    -- When the retention job deletes the row; null until the session is decided.
    purge_at bigint,
    primary key (session_id, role, idx)
);
create index media_purge on media (purge_at);

-- Every accepted attestation; the unique jti is the replay guard of last resort.
create table attestation (
    jti text primary key,
    session_id text not null references session (session_id),
    issuer text not null,
    claims jsonb not null,
    expires_at bigint not null,
    received_at bigint not null
);
create index attestation_session on attestation (session_id);

-- Work run by `idyntra worker` (and by `idyntra serve` in the single-binary setup). A claim is
-- a lease: a worker that dies mid-job lets the lease lapse and another takes the job over.
create table job (
    job_id text primary key,
    kind text not null,
    payload jsonb not null,
    -- At most one unfinished job per key (e.g. one finalize per session).
    dedupe_key text unique,
    run_at bigint not null,
    attempts integer not null default 0,
    locked_until bigint,
    last_error text,
    created_at bigint not null,
    done_at bigint
);
create index job_due on job (run_at) where done_at is null;

create table webhook_endpoint (
    webhook_endpoint_id text primary key,
    account_id text not null references account (account_id),
    url text not null,
    -- Space-separated event types.
    events text not null,
    -- The signing secret, sealed with the master key (it must be readable to sign).
    master_kid text not null,
    sealed_secret bytea not null,
    created_at bigint not null,
    deleted_at bigint
);
create index webhook_endpoint_account on webhook_endpoint (account_id, webhook_endpoint_id);

create table webhook_delivery (
    webhook_delivery_id text primary key,
    webhook_endpoint_id text not null references webhook_endpoint (webhook_endpoint_id),
    account_id text not null references account (account_id),
    event_id text not null,
    event_type text not null,
    payload text not null,
    -- pending, delivered or failed (retries exhausted)
    status text not null,
    attempts integer not null default 0,
    next_attempt_at bigint,
    last_status_code integer,
    last_error text,
    created_at bigint not null,
    delivered_at bigint,
    unique (webhook_endpoint_id, event_id)
);
create index webhook_delivery_endpoint on webhook_delivery (webhook_endpoint_id, webhook_delivery_id);
