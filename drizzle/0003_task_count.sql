CREATE TABLE "task_count" (
	"user_id" text PRIMARY KEY NOT NULL,
	"total" integer DEFAULT 0 NOT NULL,
	"completed" integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
ALTER TABLE "task_count" ADD CONSTRAINT "task_count_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
-- Counts kept by statement-level triggers with transition tables: one upsert per statement
-- however many rows it touched (a bulk load of 100 000 tasks is one counter update, not
-- 100 000), in the statement's own transaction, so the count a list reads is exact. The
-- function runs as the caller: under row-level security (todo_app acting for one user) it
-- can only count that user's own rows, which are the only rows such a statement can touch.
CREATE FUNCTION "task_count_apply"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    -- An update only: when a user is deleted, the cascade may already have removed their
    -- counter row, and an upsert would re-create it for a user who no longer exists.
    UPDATE "task_count" AS c
    SET "total" = c."total" - d."total", "completed" = c."completed" - d."completed"
    FROM (
      SELECT "user_id", count(*)::int AS "total", (count(*) FILTER (WHERE "completed"))::int AS "completed"
      FROM "task_rows_before" GROUP BY "user_id"
    ) AS d
    WHERE c."user_id" = d."user_id";
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO "task_count" AS c ("user_id", "total", "completed")
    SELECT "user_id", count(*)::int, (count(*) FILTER (WHERE "completed"))::int
    FROM "task_rows_after" GROUP BY "user_id"
    ON CONFLICT ("user_id") DO UPDATE
    SET "total" = c."total" + excluded."total", "completed" = c."completed" + excluded."completed";
  ELSE
    -- UPDATE: the difference per user; an update that changed no `completed` (or `user_id`)
    -- leaves the counters alone.
    INSERT INTO "task_count" AS c ("user_id", "total", "completed")
    SELECT "user_id", sum("total")::int, sum("completed")::int
    FROM (
      SELECT "user_id", 1 AS "total", "completed"::int AS "completed" FROM "task_rows_after"
      UNION ALL
      SELECT "user_id", -1, -("completed"::int) FROM "task_rows_before"
    ) AS d
    GROUP BY "user_id"
    HAVING sum("total") <> 0 OR sum("completed") <> 0
    ON CONFLICT ("user_id") DO UPDATE
    SET "total" = c."total" + excluded."total", "completed" = c."completed" + excluded."completed";
  END IF;
  RETURN NULL;
END
$$;--> statement-breakpoint
CREATE TRIGGER "task_count_insert" AFTER INSERT ON "task"
  REFERENCING NEW TABLE AS "task_rows_after"
  FOR EACH STATEMENT EXECUTE FUNCTION "task_count_apply"();--> statement-breakpoint
CREATE TRIGGER "task_count_update" AFTER UPDATE ON "task"
  REFERENCING OLD TABLE AS "task_rows_before" NEW TABLE AS "task_rows_after"
  FOR EACH STATEMENT EXECUTE FUNCTION "task_count_apply"();--> statement-breakpoint
CREATE TRIGGER "task_count_delete" AFTER DELETE ON "task"
  REFERENCING OLD TABLE AS "task_rows_before"
  FOR EACH STATEMENT EXECUTE FUNCTION "task_count_apply"();--> statement-breakpoint
-- The tasks that exist already (the triggers count every change from here on; CREATE
-- TRIGGER holds a lock on `task` that blocks writes until this migration commits). Row-level
-- security is forced on `task`, which would hide every row from a table owner that is not a
-- superuser (Neon's): lifted for this one statement, inside this transaction.
ALTER TABLE "task" NO FORCE ROW LEVEL SECURITY;--> statement-breakpoint
INSERT INTO "task_count" ("user_id", "total", "completed")
SELECT "user_id", count(*)::int, (count(*) FILTER (WHERE "completed"))::int
FROM "task" GROUP BY "user_id";--> statement-breakpoint
ALTER TABLE "task" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "task_count" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "task_count" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE POLICY "task_count_owner" ON "task_count" AS PERMISSIVE FOR ALL TO PUBLIC
  USING ("user_id" = current_setting('app.user_id', true))
  WITH CHECK ("user_id" = current_setting('app.user_id', true));--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE ON TABLE "task_count" TO todo_app;
