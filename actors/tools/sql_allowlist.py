"""What a tool query may be made of: node kinds, and PostgreSQL's own functions, operators, types,
``TABLESAMPLE`` methods and system relations that are side-effect-free (``actors.tools.sql_guard``
checks a query against these lists; anything not on them is refused, so new syntax fails closed).

Not allowed: anything that evaluates SQL text handed to it (``ts_stat``, ``query_to_xml``...),
reads files, settings or other sessions, takes locks, touches sequences or sleeps.
"""

from __future__ import annotations

from pglast import ast

__all__ = [
    "ALLOWED_FUNCTIONS",
    "ALLOWED_OPERATORS",
    "ALLOWED_TYPES",
    "ALLOWED_CATALOG_RELATIONS",
    "TABLESAMPLE_METHODS",
    "PLAIN_NODES",
    "STATEMENT_NAMES",
    "REFUSED_NODE_NAMES",
]

_AGGREGATES = """
    count sum avg min max bool_and bool_or every array_agg string_agg json_agg jsonb_agg
    json_object_agg jsonb_object_agg bit_and bit_or bit_xor stddev stddev_pop stddev_samp variance
    var_pop var_samp corr covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2
    regr_slope regr_sxx regr_sxy regr_syy mode percentile_cont percentile_disc range_agg
    range_intersect_agg
"""
_WINDOW = "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value"
_MATH = """
    abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod pi power
    radians round scale sign sqrt trim_scale trunc width_bucket random acos acosd asin asind atan atand
    atan2 atan2d cos cosd cot cotd sin sind tan tand sinh cosh tanh asinh acosh atanh
"""
_STRING = """
    ascii bit_length btrim char_length character_length chr concat concat_ws format initcap left
    length lower lpad ltrim md5 normalize is_normalized octet_length overlay position quote_ident
    quote_literal quote_nullable regexp_count regexp_instr regexp_like regexp_match regexp_matches
    regexp_replace regexp_split_to_array regexp_split_to_table regexp_substr repeat replace reverse
    right rpad rtrim split_part starts_with string_to_array string_to_table strpos substr substring
    to_ascii to_hex translate upper unistr encode decode convert convert_from convert_to sha224
    sha256 sha384 sha512 get_bit get_byte bit_count like_escape similar_to_escape similar_escape
    pg_collation_for
"""
_CONVERSIONS = """
    to_char to_number to_date to_timestamp text int2 int4 int8 float4 float8 numeric bool date
    timestamp timestamptz pg_typeof pg_size_pretty
"""
_DATETIME = """
    age clock_timestamp date_bin date_part date_trunc extract isfinite justify_days justify_hours
    justify_interval make_date make_interval make_time make_timestamp make_timestamptz now
    statement_timestamp timeofday transaction_timestamp timezone overlaps
"""
_JSON = """
    to_json to_jsonb array_to_json row_to_json json_build_array json_build_object jsonb_build_array
    jsonb_build_object json_object jsonb_object json_array_length jsonb_array_length json_each
    jsonb_each json_each_text jsonb_each_text json_extract_path jsonb_extract_path
    json_extract_path_text jsonb_extract_path_text json_object_keys jsonb_object_keys
    json_populate_record jsonb_populate_record json_populate_recordset jsonb_populate_recordset
    json_array_elements jsonb_array_elements json_array_elements_text jsonb_array_elements_text
    json_typeof jsonb_typeof json_to_record jsonb_to_record json_to_recordset jsonb_to_recordset
    json_strip_nulls jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_pretty
    jsonb_path_exists jsonb_path_match jsonb_path_query jsonb_path_query_array
    jsonb_path_query_first jsonb_path_exists_tz jsonb_path_match_tz jsonb_path_query_tz
    jsonb_path_query_array_tz jsonb_path_query_first_tz
"""
_ARRAYS_RANGES = """
    array_append array_cat array_dims array_fill array_length array_lower array_upper array_ndims
    array_position array_positions array_prepend array_remove array_replace array_to_string
    cardinality unnest trim_array generate_series generate_subscripts num_nulls num_nonnulls
    lower upper isempty lower_inc upper_inc lower_inf upper_inf range_merge int4range int8range
    numrange daterange tsrange tstzrange int4multirange int8multirange nummultirange
    datemultirange tsmultirange tstzmultirange multirange
"""
_OTHER = """
    gen_random_uuid host hostmask masklen netmask network broadcast family abbrev set_masklen
    inet_same_family inet_merge to_tsvector to_tsquery plainto_tsquery phraseto_tsquery
    websearch_to_tsquery ts_rank ts_rank_cd ts_headline setweight strip tsvector_to_array
    array_to_tsvector numnode querytree ts_delete ts_filter
"""

#: PostgreSQL's own functions (in ``pg_catalog``) a tool query may call: aggregates, window,
#: math, string, conversion, date/time, JSON, array, range, network and text-search functions
#: that neither change anything nor run SQL text, read files, settings, sequences or other sessions.
ALLOWED_FUNCTIONS = frozenset(
    " ".join((_AGGREGATES, _WINDOW, _MATH, _STRING, _CONVERSIONS, _DATETIME, _JSON, _ARRAYS_RANGES, _OTHER)).split()
)

#: Every operator name in PostgreSQL's own catalogue; each is run as ``OPERATOR(pg_catalog.op)``
#: where the syntax allows, so only the built-in implementations are reachable.
ALLOWED_OPERATORS = frozenset(
    [
        "!!",
        "!~",
        "!~*",
        "!~~",
        "!~~*",
        "#",
        "##",
        "#-",
        "#>",
        "#>>",
        "%",
        "&",
        "&&",
        "&<",
        "&<|",
        "&>",
        "*",
        "*<",
        "*<=",
        "*<>",
        "*=",
        "*>",
        "*>=",
        "+",
        "-",
        "->",
        "->>",
        "-|-",
        "/",
        "<",
        "<->",
        "<<",
        "<<=",
        "<<|",
        "<=",
        "<>",
        "<@",
        "<^",
        "=",
        ">",
        ">=",
        ">>",
        ">>=",
        ">^",
        "?",
        "?#",
        "?&",
        "?-",
        "?-|",
        "?|",
        "?||",
        "@",
        "@-@",
        "@>",
        "@?",
        "@@",
        "@@@",
        "^",
        "^@",
        "|",
        "|&>",
        "|/",
        "|>>",
        "||",
        "||/",
        "~",
        "~*",
        "~<=~",
        "~<~",
        "~=",
        "~>=~",
        "~>~",
        "~~",
        "~~*",
    ]
)

#: Types a value may be cast to (``CAST(x AS t)``, ``x::t``, ``t 'literal'``): PostgreSQL's own,
#: whose input functions only parse a value. Not ``xml``, ``reg*`` lookups but ``regconfig``, nor
#: domains (their checks may call any function).
ALLOWED_TYPES = frozenset(
    [
        "bool",
        "int2",
        "int4",
        "int8",
        "numeric",
        "float4",
        "float8",
        "money",
        "text",
        "varchar",
        "bpchar",
        "name",
        "char",
        "bytea",
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "interval",
        "uuid",
        "json",
        "jsonb",
        "jsonpath",
        "inet",
        "cidr",
        "macaddr",
        "macaddr8",
        "bit",
        "varbit",
        "tsvector",
        "tsquery",
        "regconfig",
        "int4range",
        "int8range",
        "numrange",
        "daterange",
        "tsrange",
        "tstzrange",
        "int4multirange",
        "int8multirange",
        "nummultirange",
        "datemultirange",
        "tsmultirange",
        "tstzmultirange",
    ]
)

#: System relations a query may read (to find its way around the schema); every other relation of
#: ``pg_catalog`` (``pg_settings``, ``pg_stat_activity``, ``pg_authid``...) is refused.
#: ``information_schema`` shows only what the role may see and is allowed.
ALLOWED_CATALOG_RELATIONS = frozenset(
    [
        "pg_tables",
        "pg_views",
        "pg_matviews",
        "pg_indexes",
        "pg_class",
        "pg_namespace",
        "pg_attribute",
        "pg_type",
        "pg_constraint",
        "pg_index",
        "pg_description",
        "pg_enum",
    ]
)

TABLESAMPLE_METHODS = frozenset({"system", "bernoulli"})

#: Node kinds a plain SELECT is made of; those that name something are checked in ``_Guard``.
#: (``INTO`` and ``FOR UPDATE`` are nodes of their own below a SelectStmt, refused there.)
PLAIN_NODES: tuple[type[ast.Node], ...] = (
    ast.A_ArrayExpr,
    ast.A_Const,
    ast.A_Indices,
    ast.A_Star,
    ast.Alias,
    ast.BitString,
    ast.BoolExpr,
    ast.Boolean,
    ast.BooleanTest,
    ast.CaseExpr,
    ast.CaseWhen,
    ast.CoalesceExpr,
    ast.CollateClause,
    ast.CTECycleClause,
    ast.CTESearchClause,
    ast.Float,
    ast.GroupingFunc,
    ast.GroupingSet,
    ast.Integer,
    ast.JoinExpr,
    ast.MinMaxExpr,
    ast.NamedArgExpr,
    ast.NullTest,
    ast.RangeFunction,
    ast.RangeSubselect,
    ast.ResTarget,
    ast.RowExpr,
    ast.SelectStmt,
    ast.SQLValueFunction,
    ast.String,
    ast.TypeCast,
    ast.WindowDef,
    ast.WithClause,
)

STATEMENT_NAMES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "DropStmt": "DROP",
    "TruncateStmt": "TRUNCATE",
    "CopyStmt": "COPY",
    "CallStmt": "CALL",
    "DoStmt": "DO",
    "VariableSetStmt": "SET",
    "ExplainStmt": "EXPLAIN",
    "CreateStmt": "CREATE TABLE",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "AlterTableStmt": "ALTER TABLE",
    "GrantStmt": "GRANT",
    "TransactionStmt": "a transaction command",
    "LockStmt": "LOCK",
    "VacuumStmt": "VACUUM",
    "ExecuteStmt": "EXECUTE",
    "PrepareStmt": "PREPARE",
    "DeclareCursorStmt": "DECLARE",
    "ListenStmt": "LISTEN",
    "NotifyStmt": "NOTIFY",
}

REFUSED_NODE_NAMES = {
    "XmlExpr": "XML functions are",
    "XmlSerialize": "XMLSERIALIZE is",
    "RangeTableFunc": "XMLTABLE is",
    "SetToDefault": "DEFAULT is",
    "CurrentOfExpr": "WHERE CURRENT OF is",
    "MultiAssignRef": "multiple-column assignment is",
    "MergeSupportFunc": "merge_action() is",
    "Constraint": "constraints are",
}
