"""The statements that keep ``history.<table>``: version digests, change detection, the splice.

**What a version is.** A keyed table's row changes version when any value changes its binary
image (``record_image_eq``, as ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` compares rows): exact
for every type, with or without an equality operator (``1.0`` and ``1.00`` differ); types whose
``=`` is already exact are compared with it. A table
without a key versions whole rows, identified by ``_nw_row_hash``, the digest of the row's text with
its trailing NULLs left out (printed with fixed DateStyle, TimeZone, float digits...:
:func:`canonical_text`), and ``_nw_copies``. Either way a column added at the source, NULL until a
value arrives, starts no version (it is NULL in the history's older versions too, and added
columns come last); a dropped column (NULL on the newer days) starts one new version for the rows
that had a value in it; a widened type is applied to the history too and starts none.

**The splice** of day D (next loaded day N, or none), for the identities whose version on D
differs from the history's state as of D (``history_changed``) and their new versions
(``history_new``, ``_nw_valid_to`` N):

1. a version covering D and running past N is copied to start at N (it resumes there);
2. a version starting at D is deleted; one starting before D now ends at D;
3. a new version equal to one starting at N absorbs it; one equal to a version ending at D extends
   that version instead of being inserted.

The history stays in one canonical form (no two adjacent equal versions), whatever the order.
A day new to the history skips the deletes of step 2 and the extension of step 3: every bound of
a version is a loaded day, so none starts or ends on it.

**Plans.** A keyed table's change detection merges two index scans in key order, the partition's
key index (its day made a constant) and the history's, with neither a hash of a whole day nor a
sort (:data:`MERGE_PLAN`); it carries the day's versions of the changed keys, so the partition is
read once. When few rows changed (:data:`PROBE_SHARE`), the splice's statements probe the
history's key index for them (:data:`PROBE_PLAN`): the planner, costing pages as if on disk, would
read every version instead, a cost that grows with the history.
"""

import datetime as dt
from dataclasses import dataclass

import psycopg
from psycopg import sql

from northwind_elt.warehouse_layout import LOG_SCHEMA, SNAPSHOT_DATE, partitions, snapshot_table

HISTORY_SCHEMA = "history"
#: ``northwind.history_days``: the days the history covers (the days loaded while it was on).
HISTORY_DAYS = "history_days"
#: The splice's work tables (in the warehouse's own schema, dropped by the splice).
CHANGED, NEW = "history_changed", "history_new"
# Prefixed like a system column (dlt: _dlt_valid_from): a source column of these names is refused.
ROW_HASH, COPIES, VALID_FROM, VALID_TO = "_nw_row_hash", "_nw_copies", "_nw_valid_from", "_nw_valid_to"
#: The columns the history adds to the source's; a source column may not have these names.
META_COLUMNS = (ROW_HASH, COPIES, VALID_FROM, VALID_TO)
#: Types whose ``=`` holds only for identical values: compared with it (faster than images).
EXACT_EQUALITY = frozenset({"int2", "int4", "int8", "text", "varchar", "date", "timestamp",
                            "timestamptz", "bool", "uuid", "bytea", "time", "oid"})
#: The planner's settings for a keyed table's change detection: merge the key indexes of the
#: partition and the history (both in key order) instead of hashing a whole day, which takes
#: more CPU and spills to disk in batches at the default ``work_mem``.
MERGE_PLAN = {"enable_hashjoin": "off", "enable_sort": "off"}
#: The planner's settings for the splice's statements when few identities changed: each joins
#: them to the history through its key index (and to ``history_new`` through its own), where the
#: planner would read the whole history (a hash join of all its versions) for a few thousand rows,
#: or, misled by a history never analyzed, loop over all its versions for each changed row.
PROBE_PLAN = {"enable_hashjoin": "off", "enable_mergejoin": "off", "enable_seqscan": "off"}
#: The largest share of the day's rows that may change for :data:`PROBE_PLAN` (reading the history
#: whole costs about as much as probing its index for 5% of its rows).
PROBE_SHARE = 0.05
#: Settings that decide how values print, fixed so a digest never depends on the session.
_CANONICAL_TEXT = {"DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "TimeZone": "UTC",
                   "extra_float_digits": "1", "bytea_output": "hex", "lc_monetary": "C"}


@dataclass(frozen=True)
class Plan:
    """One table's history: its source columns and key (empty: versions are whole rows)."""

    table: str
    columns: list[str]
    keys: list[str]
    #: The columns of an :data:`EXACT_EQUALITY` type, and those of type numeric.
    exact: frozenset[str] = frozenset()
    numeric: frozenset[str] = frozenset()

    @property
    def identity(self) -> list[str]:
        """What a version is a version of: the key, or the whole row (its digest)."""
        return self.keys or [ROW_HASH]

    @property
    def stored(self) -> list[str]:
        """Every column of a version but its interval."""
        return self.columns if self.keys else [*self.columns, ROW_HASH, COPIES]

    def same_version(self, a: str, b: str) -> sql.Composed:
        """Rows ``a`` and ``b`` of one identity are the same version."""
        if not self.keys:
            return sql.SQL("{} = {}").format(sql.Identifier(a, COPIES), sql.Identifier(b, COPIES))
        tests = [sql.SQL("{} IS NOT DISTINCT FROM {}").format(sql.Identifier(a, c),
                                                             sql.Identifier(b, c))
                 for c in self.columns if c in self.exact or c in self.numeric]
        # Equal numerics print alike when their scales are equal too (1.0 = 1.00, not alike).
        tests += [sql.SQL("scale({}) IS NOT DISTINCT FROM scale({})").format(
            sql.Identifier(a, c), sql.Identifier(b, c)) for c in self.columns if c in self.numeric]
        others = [c for c in self.columns if c not in self.exact and c not in self.numeric]
        if others:
            tests.append(sql.SQL("record_image_eq(ROW({}), ROW({}))").format(names(others, a),
                                                                             names(others, b)))
        return sql.SQL("({})").format(sql.SQL(" AND ").join(tests))

    def identity_list(self) -> sql.Composable:
        """The identity columns, quoted."""
        return names(self.identity)


def history_table(table: str) -> sql.Composed:
    """``history."<table>"`` (and the name of its as-of function)."""
    return sql.SQL("{}.{}").format(sql.Identifier(HISTORY_SCHEMA), sql.Identifier(table))


def work_table(name: str) -> sql.Composed:
    """``northwind.<name>``: a work table of the splice."""
    return sql.SQL("{}.{}").format(sql.Identifier("northwind"), sql.Identifier(name))


#: The work tables, as ``{changed}`` and ``{new}`` in the statements.
WORK = {"changed": work_table(CHANGED), "new": work_table(NEW)}


def meta_types(keyed: bool) -> dict[str, str]:
    """The history's own columns and their types."""
    rows = {} if keyed else {ROW_HASH: "uuid NOT NULL", COPIES: "bigint NOT NULL"}
    return {**rows, VALID_FROM: "date NOT NULL", VALID_TO: "date"}


def names(columns: list[str], alias: str | None = None) -> sql.Composable:
    """``a."x", a."y"`` (or unqualified)."""
    return sql.SQL(", ").join(sql.Identifier(*([alias] if alias else []), c) for c in columns)


def source_key(cur: psycopg.Cursor, table: str) -> list[str]:
    """The source key of ``snapshots.<table>``: its primary key but the day."""
    cur.execute("""SELECT a.attname FROM pg_index i
                   CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE i.indrelid = to_regclass(format('snapshots.%%I', %s::text))
                     AND i.indisprimary AND a.attname <> 'snapshot_date' ORDER BY k.n""",
                (table,))
    return [name for (name,) in cur.fetchall()]


def history_types(cur: psycopg.Cursor, table: str) -> dict[str, str]:
    """The source columns of ``history.<table>`` and their ``format_type()``."""
    cur.execute("""SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                   WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
                     AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
                (HISTORY_SCHEMA, table))
    return {n: t for n, t in cur.fetchall() if n not in META_COLUMNS}


def local_settings(cur: psycopg.Cursor, settings: dict[str, str]) -> dict[str, str]:
    """Set ``settings`` until the transaction ends; return their values before."""
    before = {}
    for name, value in settings.items():
        cur.execute("SELECT current_setting(%s), set_config(%s, %s, true)", (name, name, value))
        before[name] = cur.fetchone()[0]
    return before


def canonical_text(cur: psycopg.Cursor) -> None:
    """Fix, until the transaction ends, every setting that changes how values print."""
    for name, value in _CANONICAL_TEXT.items():
        cur.execute("SELECT set_config(%s, %s, true)", (name, value))


def row_hash(columns: list[str], alias: str) -> sql.Composed:
    """The digest of a whole row (see the module's docstring) as a uuid."""
    # Values holding a comma or a parenthesis are quoted, so only NULLs end in commas.
    return sql.SQL("md5(rtrim(ROW({})::text, ',)'))::uuid").format(names(columns, alias))


def covers(alias: str, day: dt.date) -> sql.Composed:
    """``<alias>``'s interval contains ``day``."""
    return sql.SQL("{f} <= {d} AND ({t} IS NULL OR {t} > {d})").format(
        f=sql.Identifier(alias, VALID_FROM), t=sql.Identifier(alias, VALID_TO),
        d=sql.Literal(day))


def same(a: str, b: str, columns: list[str]) -> sql.Composed:
    """``a.x = b.x AND ...``."""
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(a, c),
                                                           sql.Identifier(b, c))
                                 for c in columns)


def changed_identities(plan: Plan, source: sql.Composable | None, day: dt.date) -> sql.Composed:
    """The identities whose version in ``source`` (None: no rows) differs from the history on D.

    A keyed table's rows also carry the day's version (``_nw_valid_from`` D; NULL: the key is gone),
    so the new versions need no second pass over the partition. A keyless table's rows carry their
    new ``copies`` and the ``ctid`` of one of them.
    """
    hist = history_table(plan.table)
    if source is None:
        return sql.SQL("SELECT {} FROM {} h WHERE {}").format(
            names(plan.identity, "h"), hist, covers("h", day))
    if plan.keys:
        picked = sql.SQL(", ").join(
            sql.SQL("coalesce({}, {}) AS {}").format(sql.Identifier("n", c), sql.Identifier("h", c),
                                                     sql.Identifier(c)) if c in plan.keys
            else sql.Identifier("n", c) for c in plan.columns)
        picked = sql.SQL("{}, CASE WHEN n.{} IS NOT NULL THEN {} END AS {}").format(
            picked, sql.Identifier(plan.keys[0]), sql.Literal(day), sql.Identifier(VALID_FROM))
        # The day's constant lets the partition's key index (day, key...) give key order: with the
        # history's (key..., _nw_valid_from) the join merges two index scans (see MERGE_PLAN).
        new = sql.SQL("(SELECT * FROM {} WHERE {} = {})").format(
            source, sql.Identifier(SNAPSHOT_DATE), sql.Literal(day))
        old = sql.SQL("SELECT * FROM {} h WHERE {}").format(hist, covers("h", day))
        differ = sql.SQL("n.{k} IS NULL OR h.{k} IS NULL OR NOT ({same})").format(
            k=sql.Identifier(plan.keys[0]), same=plan.same_version("n", "h"))
    else:
        picked = sql.SQL("coalesce(n._nw_row_hash, h._nw_row_hash) AS _nw_row_hash, n._nw_copies, n.at")
        new = sql.SQL("(SELECT {} AS _nw_row_hash, count(*) AS _nw_copies, min(p.ctid) AS at "
                      "FROM {} p GROUP BY 1)").format(row_hash(plan.columns, "p"), source)
        old = sql.SQL("SELECT _nw_row_hash, _nw_copies FROM {} h WHERE {}").format(hist, covers("h", day))
        differ = sql.SQL("n._nw_copies IS DISTINCT FROM h._nw_copies")
    return sql.SQL("SELECT {picked} FROM {new} n FULL JOIN ({old}) h ON {same} "
                   "WHERE {differ}").format(picked=picked, new=new, old=old,
                                            same=same("n", "h", plan.identity), differ=differ)


def new_versions(plan: Plan, source: sql.Composable | None, following: dt.date | None
                 ) -> sql.Composed:
    """The versions ``source`` has of the changed identities, each valid until ``following``."""
    until = sql.SQL("CAST({} AS date) AS _nw_valid_to").format(sql.Literal(following))
    if source is None:
        return sql.SQL("SELECT {}, {} FROM {} LIMIT 0").format(
            names(plan.stored), until, history_table(plan.table))
    if plan.keys:
        return sql.SQL("SELECT {}, {} FROM {changed} WHERE {} IS NOT NULL").format(
            names(plan.columns), until, sql.Identifier(VALID_FROM), **WORK)
    return sql.SQL("SELECT {}, c._nw_row_hash, c._nw_copies, {} FROM {changed} c JOIN {} p "
                   "ON p.ctid = c.at").format(names(plan.columns, "p"), until, source, **WORK)


def bulk_insert(plan: Plan, source: sql.Composable, day: dt.date, following: dt.date | None
                ) -> sql.Composed:
    """Insert every row of ``source`` (``day``'s partition) as a version valid until ``following``.

    Only for a history without a version: the general splice would find every identity changed
    and insert the same versions (a keyless table's one of its identical rows at the least ctid).
    """
    interval = sql.SQL("{}, CAST({} AS date)").format(sql.Literal(day), sql.Literal(following))
    into = sql.SQL("INSERT INTO {} ({}, {})").format(
        history_table(plan.table), names(plan.stored), names([VALID_FROM, VALID_TO]))
    if plan.keys:
        return sql.SQL("{} SELECT {}, {} FROM {}").format(into, names(plan.columns), interval,
                                                          source)
    return sql.SQL("{} SELECT {}, c._nw_row_hash, c._nw_copies, {} FROM (SELECT {} AS _nw_row_hash, "
                   "count(*) AS _nw_copies, min(p.ctid) AS at FROM {} p GROUP BY 1) c "
                   "JOIN {} p ON p.ctid = c.at").format(
        into, names(plan.columns, "p"), interval, row_hash(plan.columns, "p"), source, source)


def add_primary_key(plan: Plan) -> sql.Composed:
    """The history's primary key: its identity and ``_nw_valid_from`` (named ``<table>_pkey``)."""
    return sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({}, {})").format(
        history_table(plan.table), plan.identity_list(), sql.Identifier(VALID_FROM))


def splice_statements(plan: Plan, day: dt.date, following: dt.date | None, first_load: bool
                      ) -> list[sql.Composed]:
    """The statements of the splice (the module's steps 1 to 3), in order.

    ``first_load``: ``day`` was not in the history before, so no version starts or ends on it
    (every bound is a loaded day): nothing to delete, nothing to extend, the new versions are
    inserted.
    """
    hist, ident = history_table(plan.table), plan.identity
    d = sql.Literal(day)
    interval = names([VALID_FROM, VALID_TO])
    statements = []
    if following is not None:
        n = sql.Literal(following)
        statements.append(sql.SQL(
            "INSERT INTO {hist} ({stored}, {interval}) SELECT {h_stored}, {n}, h._nw_valid_to "
            "FROM {hist} h JOIN {changed} c ON {same} "
            "WHERE h._nw_valid_from <= {d} AND (h._nw_valid_to IS NULL OR h._nw_valid_to > {n})").format(
            hist=hist, stored=names(plan.stored), interval=interval,
            h_stored=names(plan.stored, "h"), n=n, same=same("h", "c", ident), d=d, **WORK))
    if not first_load:
        statements.append(sql.SQL(
            "DELETE FROM {} h USING {changed} c WHERE {} AND h._nw_valid_from = {}").format(
            hist, same("h", "c", ident), d, **WORK))
    statements.append(sql.SQL(
        "UPDATE {} h SET _nw_valid_to = {d} FROM {changed} c WHERE {} AND h._nw_valid_from < {d} "
        "AND (h._nw_valid_to IS NULL OR h._nw_valid_to > {d})").format(hist, same("h", "c", ident), d=d,
                                                              **WORK))
    if following is not None:
        statements.append(sql.SQL(
            "WITH gone AS (DELETE FROM {hist} h USING {new} n WHERE {same} "
            "AND h._nw_valid_from = {n} AND {v} RETURNING {h_ident}, h._nw_valid_to) "
            "UPDATE {new} n SET _nw_valid_to = g._nw_valid_to FROM gone g WHERE {same_g}").format(
            hist=hist, same=same("h", "n", ident), n=sql.Literal(following),
            v=plan.same_version("h", "n"),
            h_ident=names(ident, "h"), same_g=same("n", "g", ident), **WORK))
    if not first_load:
        statements.append(sql.SQL(
            "WITH extended AS (UPDATE {hist} h SET _nw_valid_to = n._nw_valid_to FROM {new} n "
            "WHERE {same} AND h._nw_valid_to = {d} AND {v} RETURNING {h_ident}) "
            "DELETE FROM {new} n USING extended e WHERE {same_e}").format(
            hist=hist, same=same("h", "n", ident), d=d, v=plan.same_version("h", "n"),
            h_ident=names(ident, "h"), same_e=same("e", "n", ident), **WORK))
    statements.append(sql.SQL(
        "INSERT INTO {hist} ({stored}, {interval}) SELECT {n_stored}, {d}, n._nw_valid_to "
        "FROM {new} n").format(hist=hist, stored=names(plan.stored), interval=interval,
                               n_stored=names(plan.stored, "n"), d=d, **WORK))
    return statements


def as_of_query(plan: Plan, snapshot_order: list[str]) -> sql.Composed:
    """The body of the as-of function: the snapshot table's columns, the day as ``$1``."""
    return as_of_rows(plan.table, bool(plan.keys), snapshot_order, sql.SQL("$1"))


def as_of_rows(table: str, keyed: bool, columns: list[str], day: sql.Composable
               ) -> sql.Composed:
    """``columns`` of ``history.<table>`` as of ``day`` (``snapshot_date``: the day itself).

    A keyless table's version comes back ``copies`` times, so the rows equal the day's partition.
    """
    select = sql.SQL(", ").join(day if c == "snapshot_date" else sql.Identifier("h", c)
                                for c in columns)
    repeat = sql.SQL("" if keyed else " CROSS JOIN generate_series(1, h._nw_copies) AS r(n)")
    return sql.SQL("SELECT {} FROM {} h{} WHERE h._nw_valid_from <= {d} "
                   "AND (h._nw_valid_to IS NULL OR h._nw_valid_to > {d})").format(
        select, history_table(table), repeat, d=day)


def history_covers(cur: psycopg.Cursor, table: str, day: dt.date) -> bool:
    """Whether ``history.<table>`` holds ``day`` (the day was spliced into the history)."""
    cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL "
                "AND to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                (HISTORY_SCHEMA, table, LOG_SCHEMA, HISTORY_DAYS))
    if not cur.fetchone()[0]:
        return False
    cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE snapshot_date = %s)").format(
        days_table()), (day,))
    return cur.fetchone()[0]


def day_relation(cur: psycopg.Cursor, table: str, day: dt.date) -> sql.Composed:
    """Where ``table``'s rows of ``day`` are: its partition if kept, else the history's as-of.

    ``snapshots.<table>`` (the caller picks the day with ``snapshot_date``), or
    ``history."<table>"(day)``: the snapshot table's columns and types, ``snapshot_date`` the day,
    the same rows as the dropped partition.
    """
    if partitions(cur, table).get(day) is None and history_covers(cur, table, day):
        return sql.SQL("{}({})").format(history_table(table), sql.Literal(day))
    return snapshot_table(table)


def days_table() -> sql.Composed:
    """``northwind.history_days``: the days the history covers."""
    return sql.SQL("{}.{}").format(sql.Identifier(LOG_SCHEMA), sql.Identifier(HISTORY_DAYS))


def history_days(cur: psycopg.Cursor) -> list[dt.date]:
    """The days the history covers, oldest first (empty before its first load)."""
    cur.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                (LOG_SCHEMA, HISTORY_DAYS))
    if not cur.fetchone()[0]:
        return []
    cur.execute(sql.SQL("SELECT snapshot_date FROM {} ORDER BY 1").format(days_table()))
    return [day for (day,) in cur.fetchall()]
