"""The sink's read side: what answers questions about the stored usage, and never writes it.

`queries` (the canned questions and their SQL), `readapi` (the HTTP read API and the usage page in
`web/`), `readservice` (the read API on its own, against a ClickHouse server), `report` (the CLI
reports), `drift` (our numbers against reconcile's), and ClickHouse's HTTP interface on the embedded
engine: `sqlhttp` (HTTP), `sqlengine` (execution), `native` (Native layouts), `sqlerrors` (codes).

It may use the schema and the connection (`sink.store`) and the error classification (`sink.errors`),
never the write side (`writer`, `batch`, `derive`, `service`, ...): the import contract in
pyproject.toml. The sink process hosts the read API only because the embedded engine allows one
process per data directory.
"""
