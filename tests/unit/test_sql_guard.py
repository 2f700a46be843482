"""The SQL tool's guard: one plain SELECT, parsed by PostgreSQL's own parser, parameters bound by name."""

from __future__ import annotations

import pytest

from actors.errors import InvalidInput, PermanentError
from actors.sql_tool import QueryRefused, check_params, check_select, run_query
from interlock.settings import Settings

ALLOWED = [
    ("SELECT id, name FROM items WHERE price > :min ORDER BY id", ["min"]),
    ("select * from items where name = :name and id = any(:ids)", ["name", "ids"]),
    ("SELECT 1;", []),
    ("SELECT count(*) FROM items -- a comment; DROP TABLE items", []),
    ("SELECT 1 /* ; DELETE FROM items */", []),
    ("WITH cheap AS (SELECT * FROM items WHERE price < :p) SELECT * FROM cheap", ["p"]),
    ("SELECT a FROM x UNION ALL SELECT b FROM y", []),
    ("VALUES (1, 'a'), (2, 'b')", []),
    ("TABLE items", []),
    ("SELECT pg_sleep(5)", []),
    ("SELECT CAST(:n AS integer) + :n", ["n"]),
    ("SELECT 'it''s' AS s, :a AS a", ["a"]),
    ("SELECT * FROM items WHERE name = 'x' OR '1'='1'", []),  # odd but read-only
]

REFUSED = [
    ("DELETE FROM items", "not DELETE"),
    ("delete from items where id = 1", "not DELETE"),
    ("DROP TABLE items", "not DROP"),
    ("INSERT INTO items VALUES (1)", "not INSERT"),
    ("UPDATE items SET price = 0", "not UPDATE"),
    ("TRUNCATE items", "not TRUNCATE"),
    ("CREATE TABLE x (id int)", "not CREATE TABLE"),
    ("ALTER TABLE items ADD COLUMN x int", "not ALTER TABLE"),
    ("COPY items TO STDOUT", "not COPY"),
    ("COPY (SELECT 1) TO '/tmp/x'", "not COPY"),
    ("CALL do_things()", "not CALL"),
    ("DO $$ BEGIN PERFORM 1; END $$", "not DO"),
    ("SET statement_timeout = 0", "not SET"),
    ("SET ROLE postgres", "not SET"),
    ("RESET ROLE", "not SET"),
    ("BEGIN", "transaction"),
    ("COMMIT", "transaction"),
    ("EXPLAIN ANALYZE DELETE FROM items", "not EXPLAIN"),
    ("LOCK TABLE items", "not LOCK"),
    ("GRANT ALL ON items TO public", "not GRANT"),
    ("SELECT 1; SELECT 2", "exactly one statement"),
    ("SELECT 1; DELETE FROM items", "exactly one statement"),
    ("SELECT * FROM items FOR UPDATE", "FOR UPDATE"),
    ("SELECT * FROM items FOR SHARE SKIP LOCKED", "FOR UPDATE"),
    ("SELECT * FROM (SELECT * FROM items FOR NO KEY UPDATE) s", "FOR UPDATE"),
    ("SELECT * INTO copy_of_items FROM items", "INTO"),
    ("WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone", "data-modifying"),
    ("WITH x AS (UPDATE items SET price = 0 RETURNING id) SELECT count(*) FROM x", "data-modifying"),
    ("WITH x AS (INSERT INTO items DEFAULT VALUES RETURNING id) SELECT 1", "data-modifying"),
    ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("SELECT pg_catalog.pg_read_binary_file('/etc/passwd')", "pg_read_binary_file"),
    ("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir"),
    ("SELECT set_config('role', 'postgres', false)", "set_config"),
    ("SELECT lo_import('/etc/passwd')", "lo_import"),
    ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
    ("SELECT pg_terminate_backend(1)", "pg_terminate_backend"),
    ("SELECT query_to_xml('delete from items', true, false, '')", "query_to_xml"),
    ("SELECT dblink_exec('dbname=x', 'drop table items')", "dblink_exec"),
    ("SELECT $1", "positional parameters"),
    ("SELECT :n::int", "CAST(:name AS type)"),
    ("SELEC 1", "not valid SQL"),
    ("", "empty"),
    ("   \n ", "empty"),
]


@pytest.mark.parametrize(("query", "names"), ALLOWED, ids=[q for q, _ in ALLOWED])
def test_plain_selects_pass(query: str, names: list[str]) -> None:
    assert check_select(query) == names


@pytest.mark.parametrize(("query", "reason"), REFUSED, ids=[q or "empty" for q, _ in REFUSED])
def test_everything_else_is_refused(query: str, reason: str) -> None:
    with pytest.raises(QueryRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_select(query)


@pytest.mark.parametrize(
    ("template", "payload"),
    [
        ("SELECT * FROM items WHERE name = '{}'", "x'; DROP TABLE items; --"),
        ("SELECT * FROM items WHERE name = '{}'", "x' ; DELETE FROM items WHERE '1'='1"),
        ("SELECT * FROM items WHERE id = {}", "1; UPDATE items SET price = 0"),
        ("SELECT * FROM items WHERE id = {}", "1 UNION SELECT 1; COPY items TO '/tmp/stolen'"),
        ("SELECT * FROM items WHERE name = '{}'", "x'); COPY items TO '/tmp/stolen'; --"),
    ],
)
def test_string_built_injection_is_refused(template: str, payload: str) -> None:
    """What an agent that pastes values into SQL would send: the extra statement is seen and refused."""
    with pytest.raises(QueryRefused, match="exactly one statement|not valid SQL"):
        check_select(template.format(payload))


def test_a_payload_that_stays_inside_its_quotes_is_only_a_string() -> None:
    assert check_select("SELECT * FROM items WHERE name = '1; UPDATE items SET price = 0'") == []


def test_parameters_must_match_the_query() -> None:
    names = check_select("SELECT * FROM items WHERE name = :name")
    assert check_params(names, {"name": "x' OR '1'='1"}) == {"name": "x' OR '1'='1"}
    with pytest.raises(InvalidInput, match=":name"):
        check_params(names, {})
    with pytest.raises(InvalidInput, match="extra"):
        check_params(names, {"name": "a", "extra": 1})
    with pytest.raises(InvalidInput, match="must be a string"):
        check_params(names, {"name": {"nested": "object"}})


def test_the_tool_is_off_without_its_own_database_url() -> None:
    with pytest.raises(PermanentError, match="INTERLOCK_TOOLS_DATABASE_URL"):
        run_query("SELECT 1", settings=Settings.from_env({}, database_url="postgresql://postgres@127.0.0.1/x"))
