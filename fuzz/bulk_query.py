"""Fuzz the bulk-query CSV reader of `adapters.care_insurance.bulk_query`.

The whole input is a bulk-query file (the 18-field CSV, docs/bulk-query.md) posted by Meguro
(1131105000000000). It goes through ``decode_file``, then ``parse_bulk_query_file`` against the
packaged catalogue (with ``max_lines`` = 64, small enough for the fuzzer's inputs to
reach the limit), then the result file's lines for those lines as they are stored (each valid
line still pending, each invalid one ended ``invalid`` with its refusal), in the file's
encoding.

Each line's refusal (field and detail) is fed back to libFuzzer as extra coverage
(`fuzz_feedback`), so that lines refused for new reasons are kept.

Every input must give a parsed file or a `RenkeiError` with ``BulkQueryFileInvalid``; every
line either a query or a refusal (never an exception); the encoding ``parse_bulk_query_file``
reports must be the one ``decode_file`` found. Anything else is a finding.

A campaign (docs/reliability.md, "Fuzzing")::

    nice -n 10 .venv/bin/python fuzz/bulk_query.py -runs=1000000 -timeout=10 \\
        -dict=fuzz/csv.dict -artifact_prefix=/tmp/fuzz-artifacts/bulk_query/ \\
        /tmp/fuzz-corpus/bulk_query fuzz/corpus/bulk_query
"""

from __future__ import annotations

import json
import sys
from typing import Any

import atheris
from fuzz_feedback import Features

# Imported by bulk_query but not on the path under test: left uninstrumented.
NOT_UNDER_TEST = [
    "adapters.network_link",
    "middleware.persons",
    "middleware.audit",
    "middleware.bulk_queries",
    "middleware.clock",
    "middleware.config",
    "middleware.held_queue",
    "middleware.node",
    "middleware.outbox",
    "middleware.permit",
    "middleware.permitted_list",
    "middleware.records",
    "middleware.replica",
    "middleware.storage",
    "middleware.tables",
]

with atheris.instrument_imports(
    include=["middleware", "adapters", "codes"], exclude=NOT_UNDER_TEST
):
    from adapters.care_insurance import bulk_query
    from codes import errors
    from codes.catalogue import load_catalogue
    from codes.errors import RenkeiError
    from middleware import bulk_queries

REQUESTER = "1131105000000000"
CATALOGUE = load_catalogue()
MAX_LINES = 64
FEATURES = Features()


def stored_row(line: bulk_query.BulkQueryLine) -> dict[str, Any]:
    """The line's row as `middleware.bulk_queries.store_bulk_query` writes it, joined with no
    query."""
    row: dict[str, Any] = {
        "line_number": line.number,
        "raw": line.raw,
        "state": bulk_queries.PENDING,
        "integrated_address_number": None,
        "procedure": None,
        "information_name": None,
        "provider": None,
        "error_code": None,
        "error_params": None,
        "query_id": None,
        "transaction_number": None,
        "query_state": None,
        "result": None,
    }
    if line.submission is not None:
        submission = line.submission
        row.update(
            integrated_address_number=submission.integrated_address_number,
            procedure=submission.procedure,
            information_name=submission.information_name,
            provider=submission.provider,
        )
    else:
        assert line.refusal is not None, f"line {line.number}: neither a query nor a refusal"
        row.update(
            state=bulk_queries.INVALID,
            error_code=errors.BULK_QUERY_LINE_INVALID.code,
            error_params=json.dumps(line.refusal.params(line.number), ensure_ascii=False),
        )
    return row


def TestOneInput(data: bytes) -> None:
    try:
        _, encoding = bulk_query.decode_file(data)
    except RenkeiError as refusal:
        assert refusal.code == "BulkQueryFileInvalid", f"unexpected code {refusal.code}"
        encoding = None
    try:
        parsed = bulk_query.parse_bulk_query_file(data, REQUESTER, CATALOGUE, max_lines=MAX_LINES)
    except RenkeiError as refusal:
        assert refusal.code == "BulkQueryFileInvalid", f"unexpected code {refusal.code}"
        FEATURES.refusal(refusal)
        return
    assert parsed.encoding == encoding, f"read as {parsed.encoding}, decoded as {encoding}"
    assert 1 <= len(parsed.lines) <= MAX_LINES, f"{len(parsed.lines)} lines accepted"
    for line in parsed.lines:
        if line.refusal is not None:
            field, detail = line.refusal.field, FEATURES.normalized(line.refusal.detail_en)
            FEATURES.hit("refused", field, detail)
        elif line.submission is not None:
            conditions = line.submission.conditions
            kind = conditions and (conditions.fiscal_year is None, conditions.period_start is None)
            FEATURES.hit("query", parsed.encoding, parsed.header, kind)
    rows = [stored_row(line) for line in parsed.lines]
    bulk_query.result_header(parsed.encoding)
    bulk_query.result_lines(rows, parsed.encoding)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
