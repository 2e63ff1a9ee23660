-- Row-level security: the second wall behind the repository's own `WHERE user_id = $1`.
-- The service runs every task query as the role `todo_app` (NOLOGIN, no BYPASSRLS) with
-- `set_config('role', 'todo_app', true), set_config('app.user_id', <sub>, true)` as the first
-- statement of the transaction (src/db/with-user.ts); the policies below then show and accept
-- only that user's rows.
--
-- Roles belong to the cluster, not to one database: many databases on one server (tests,
-- branches) run this migration, possibly at the same moment. So the role is created only
-- when missing, and a concurrent creation that wins the race is not an error.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'todo_app') THEN
    BEGIN
      CREATE ROLE todo_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
    EXCEPTION
      WHEN duplicate_object OR unique_violation THEN
        NULL; -- created meanwhile by the migration of another database
      WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'cannot create role todo_app as %: %', current_user, SQLERRM
          USING HINT = 'Give this user CREATEROLE, or have an administrator run: '
            || 'CREATE ROLE todo_app NOLOGIN NOBYPASSRLS; GRANT todo_app TO ' || quote_ident(current_user);
    END;
  END IF;
END
$$;--> statement-breakpoint
-- A role of that name made by someone else must not be able to step around the policies.
DO $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_catalog.pg_roles
    WHERE rolname = 'todo_app' AND (rolsuper OR rolbypassrls)
  ) THEN
    RAISE EXCEPTION 'role todo_app is SUPERUSER or BYPASSRLS: row-level security would not confine it'
      USING HINT = 'ALTER ROLE todo_app NOSUPERUSER NOBYPASSRLS';
  END IF;
END
$$;--> statement-breakpoint
-- What the role may touch: the data of this schema, nothing else (not the migrations journal
-- in schema "drizzle", no DDL, no TRUNCATE). A table added later needs its own GRANT; without
-- it a query as the role fails with 42501 (answered 403, logged as a security event).
GRANT USAGE ON SCHEMA public TO todo_app;--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE
  "task", "idempotency_key", "user", "session", "account", "verification", "jwks"
  TO todo_app;--> statement-breakpoint
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO todo_app;--> statement-breakpoint
-- `SET ROLE todo_app` needs membership unless the connecting user is a superuser. On Neon the
-- owner (e.g. neondb_owner) is not: grant it the role. PostgreSQL 16+ separates the right to
-- SET a role from membership (a CREATEROLE creator only gets ADMIN OPTION), hence WITH SET TRUE.
DO $$
DECLARE
  can_set boolean;
BEGIN
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    RETURN;
  END IF;
  IF current_setting('server_version_num')::int >= 160000 THEN
    can_set := pg_catalog.pg_has_role(current_user, 'todo_app', 'SET');
  ELSE
    can_set := pg_catalog.pg_has_role(current_user, 'todo_app', 'MEMBER');
  END IF;
  IF can_set THEN
    RETURN;
  END IF;
  BEGIN
    IF current_setting('server_version_num')::int >= 160000 THEN
      EXECUTE format('GRANT todo_app TO %I WITH INHERIT FALSE, SET TRUE', current_user);
    ELSE
      EXECUTE format('GRANT todo_app TO %I', current_user);
    END IF;
  EXCEPTION
    WHEN insufficient_privilege THEN
      RAISE EXCEPTION 'cannot grant role todo_app to %: %', current_user, SQLERRM
        USING HINT = 'Have an administrator run: GRANT todo_app TO ' || quote_ident(current_user);
  END;
END
$$;--> statement-breakpoint
-- FORCE: the table owner is confined too (superusers and BYPASSRLS roles never are; that is
-- why the service switches to todo_app instead of relying on its connection user).
-- current_setting(…, true) is NULL when never set, '' after a local setting ended: neither
-- equals a user id, so a transaction that did not name its user sees and writes nothing.
ALTER TABLE "task" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "task" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE POLICY "task_owner" ON "task" AS PERMISSIVE FOR ALL TO PUBLIC
  USING ("user_id" = current_setting('app.user_id', true))
  WITH CHECK ("user_id" = current_setting('app.user_id', true));--> statement-breakpoint
-- A replayed idempotent response is a task: the same wall.
ALTER TABLE "idempotency_key" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "idempotency_key" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE POLICY "idempotency_key_owner" ON "idempotency_key" AS PERMISSIVE FOR ALL TO PUBLIC
  USING ("user_id" = current_setting('app.user_id', true))
  WITH CHECK ("user_id" = current_setting('app.user_id', true));
