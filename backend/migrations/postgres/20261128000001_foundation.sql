-- Accounts, API keys, sessions, idempotency keys and the hash-chained audit log.
-- Times are Unix milliseconds (bigint) so both databases compare and sort them the same way.

create table account (
    account_id text primary key,
    name text not null unique,
    created_at bigint not null
);

create table api_key (
    api_key_id text primary key,
    account_id text not null references account (account_id),
    name text not null,
    prefix text not null,
    secret_hash bytea not null,
    scopes text not null,
    is_dev boolean not null default false,
    created_at bigint not null,
    expires_at bigint,
    revoked_at bigint,
    last_used_at bigint,
    rotated_to text
);
create index api_key_prefix on api_key (prefix);
create index api_key_account on api_key (account_id, created_at);

create table session (
    session_id text primary key,
    account_id text not null references account (account_id),
    status text not null,
    reference text,
    metadata jsonb not null,
    options jsonb not null,
    nonce text not null,
    created_at bigint not null,
    updated_at bigint not null,
    expires_at bigint not null,
    result jsonb,
    redacted_at bigint
);
create index session_account_id on session (account_id, session_id desc);
create index session_account_status on session (account_id, status, session_id desc);

create table idempotency_key (
    account_id text not null references account (account_id),
    key text not null,
    request_hash bytea not null,
    response_status integer,
    response_content_type text,
    response_body bytea,
    created_at bigint not null,
    locked_at bigint not null,
    primary key (account_id, key)
);
create index idempotency_key_created on idempotency_key (created_at);

-- Append-only. Rows are written with the change they record; a sealer then chains them in
-- commit order: chain_seq, prev_hash and hash are set once and never again, so that writers do
-- not queue on one hot row and the chain still covers every row.
create table audit_log (
    audit_log_id bigserial primary key,
    created_at bigint not null,
    actor text not null,
    action text not null,
    target text not null,
    request_id text,
    details text not null,
    chain_seq bigint unique,
    prev_hash text,
    hash text
);
create index audit_log_unsealed on audit_log (audit_log_id) where chain_seq is null;

-- One row: the sealed chain's head. Sealers lock it, so only one seals at a time.
create table audit_head (
    audit_head_id integer primary key check (audit_head_id = 1),
    last_seq bigint not null,
    last_hash text not null
);
insert into audit_head (audit_head_id, last_seq, last_hash)
values (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

create function audit_log_append_only() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' or old.chain_seq is not null
        or new.audit_log_id <> old.audit_log_id or new.created_at <> old.created_at
        or new.actor <> old.actor or new.action <> old.action or new.target <> old.target
        or new.request_id is distinct from old.request_id or new.details <> old.details then
        raise exception 'audit_log is append-only';
    end if;
    return new;
end;
$$;
create trigger audit_log_append_only before update or delete on audit_log
for each row execute function audit_log_append_only();
