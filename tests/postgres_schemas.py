"""Fresh, fully migrated PostgreSQL schemas for tests, reused instead of rebuilt.

Replaying pg_dump's text of a migrated schema costs a tenth of a second or
more (and dropping it after some more), every test that asks for one. Instead
each test process keeps a small pool: when a test is over and its schema's
structure is still that of a fresh one (the same tables, columns, defaults,
indexes, constraints, sequences and nothing else), its rows are deleted, its
data as migrated (alembic_version) put back, its sequences set back, and the
schema renamed into the pool; the next test that wants a migrated schema gets
it renamed to its own name. Anything else (a test that migrated down, altered
a table, left a lock held, grew a table past a few pages or had it analysed)
drops the schema as before.

The checks read the catalogues through their indexes only (by the schema's
and each table's oid): the test database may be run without autovacuum, and
then scans of pg_class or pg_attribute cost more than a whole replay.
"""

from __future__ import annotations

import re
import uuid

# A pooled schema's tables stay under this many pages each: a table of fewer
# than ten pages never analysed is planned as one of ten, as a fresh one is.
MOST_PAGES = 4
POOL_SIZE = 2

FINGERPRINT = """
WITH nsp AS (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s),
objs AS (
    SELECT d.classid, d.objid FROM pg_depend d, nsp
    WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = nsp.oid
),
rels AS (
    SELECT c.* FROM objs JOIN pg_class c ON objs.classid = 'pg_class'::regclass AND c.oid = objs.objid
)
SELECT
  (SELECT string_agg(line, E'\\n' ORDER BY line) FROM (
    SELECT 'rel ' || r.relname || ' ' || r.relkind::text
      || ' cols ' || coalesce((
           SELECT string_agg(a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                             || ' ' || a.attnotnull::text || ' ' || a.attidentity::text || ' '
                             || coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''), ', ' ORDER BY a.attnum)
           FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
           WHERE a.attrelid = r.oid AND a.attnum > 0), '')
      || ' idx ' || coalesce((
           SELECT string_agg(pg_get_indexdef(i.indexrelid), ', ' ORDER BY pg_get_indexdef(i.indexrelid))
           FROM pg_index i WHERE i.indrelid = r.oid), '')
      || ' con ' || coalesce((
           SELECT string_agg(k.conname || ' ' || pg_get_constraintdef(k.oid), ', '
                             ORDER BY k.conname, pg_get_constraintdef(k.oid))
           FROM pg_constraint k WHERE k.conrelid = r.oid), '')
      || ' trg ' || coalesce((
           SELECT string_agg(pg_get_triggerdef(t.oid), ', ' ORDER BY pg_get_triggerdef(t.oid))
           FROM pg_trigger t WHERE t.tgrelid = r.oid AND NOT t.tgisinternal), '')
      || ' seq ' || coalesce((
           SELECT concat_ws(' ', s.seqtypid, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
           FROM pg_sequence s WHERE s.seqrelid = r.oid), '')
      || ' rules ' || (SELECT count(*) FROM pg_rewrite w WHERE w.ev_class = r.oid)::text
      || ' policies ' || (SELECT count(*) FROM pg_policy p WHERE p.polrelid = r.oid)::text
      AS line
    FROM rels r
    UNION ALL
    SELECT 'object ' || objs.classid::regclass::text || ' ' || objs.objid::text
    FROM objs WHERE objs.classid <> 'pg_class'::regclass
  ) q) AS structure,
  (SELECT coalesce(max(pg_relation_size(r.oid) / current_setting('block_size')::int), 0)
   FROM rels r WHERE r.relkind = 'r') AS most_pages,
  (SELECT count(*) FROM rels r WHERE r.relkind = 'r' AND r.reltuples >= 0) AS analysed  -- alembic_version, fresh
"""


class SchemaPool:
    """Migrated schemas of one test process, emptied and ready to hand out."""

    def __init__(self, libpq_url: str, template: str, dump_sql: str) -> None:
        self.libpq_url = libpq_url
        self.template = template
        self.tables = re.findall(rf"^CREATE TABLE {re.escape(template)}\.(\w+) \(", dump_sql, re.M)
        # What a fresh schema holds besides its structure: alembic_version's
        # row and each sequence's start, as pg_dump wrote them.
        self.data = [line for line in dump_sql.splitlines()
                     if line.startswith((f"INSERT INTO {template}.", "SELECT pg_catalog.setval("))]
        self.fresh: tuple[str, int] | None = None  # a freshly replayed schema's structure, and its analysed tables
        self.ready: list[str] = []
        self._conn = None

    def _connection(self):
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.libpq_url, autocommit=True)
        return self._conn

    def _structure(self, schema: str) -> tuple[str, int, int]:
        structure, most_pages, analysed = self._connection().execute(FINGERPRINT, {"schema": schema}).fetchone()
        return (structure or "").replace(schema, "<schema>"), most_pages, analysed

    def note_fresh(self, schema: str) -> None:
        """Remember the structure of ``schema``, just replayed from the dump."""
        if self.fresh is None:
            structure, _, analysed = self._structure(schema)
            self.fresh = structure, analysed

    def take(self, schema: str) -> bool:
        """Turn the empty schema ``schema`` into a migrated one from the pool,
        if the pool has one; False if not (the caller migrates it)."""
        while self.ready:
            pooled = self.ready.pop()
            try:
                with self._connection().transaction():
                    self._conn.execute(f"DROP SCHEMA {schema}; ALTER SCHEMA {pooled} RENAME TO {schema}")
                return True
            except Exception:  # noqa: BLE001 - the schema was not empty after all, or the pooled one is gone
                self._drop(pooled)
                return False
        return False

    def give_back(self, schema: str) -> None:
        """``schema``'s test is over: pool the schema if it can be made fresh, else drop it."""
        if self.fresh is not None and len(self.ready) < POOL_SIZE and self._empty_into_pool(schema):
            return
        self._drop(schema)

    def _empty_into_pool(self, schema: str) -> bool:
        try:
            structure, most_pages, analysed = self._structure(schema)
            if (structure, analysed) != self.fresh or most_pages > MOST_PAGES:
                return False
            pooled = f"p_{uuid.uuid4().hex[:12]}"
            tables = ", ".join(f"{schema}.{table}" for table in self.tables)
            statements = [
                "SET LOCAL lock_timeout = '500ms'",
                # Writers still about (a leaked connection) wait, then find the names gone.
                f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE",
                # Every table is emptied, so foreign keys need no checking on the way.
                "SET LOCAL session_replication_role = replica",
                *(f"DELETE FROM {schema}.{table}" for table in self.tables),
                *(line.replace(f"{self.template}.", f"{schema}.") for line in self.data),
                f"ALTER SCHEMA {schema} RENAME TO {pooled}",
            ]
            with self._connection().transaction():
                self._conn.execute(";\n".join(statements))
        except Exception:  # noqa: BLE001 - anything amiss: drop it as before
            return False
        self.ready.append(pooled)
        return True

    def _drop(self, schema: str) -> None:
        self._connection().execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    def close(self) -> None:
        for schema in self.ready:
            self._drop(schema)
        self.ready.clear()
        if self._conn is not None:
            self._conn.close()
