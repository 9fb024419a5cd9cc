"""Custom import-linter contract: a package may import only the stdlib and a named allowlist.

DESIGN §1 states what the bottom layers may depend on outside the project:
`store ──► (stdlib, lmdb)`, `overlay.core ──► (stdlib, cbor2, nacl)`. A `forbidden`
contract lists what may not be imported, so a dependency nobody listed slips through; this
contract lists what may be, so any new third-party import into those packages fails `make
lint` until DESIGN and the allowlist say otherwise.

Only direct imports are checked: `store` importing `overlay.core` (which imports cbor2) is
`overlay.core`'s business, and the layers contract decides which project packages a package
may import. The standard library is `sys.stdlib_module_names`; `__future__` counts as stdlib.

Loaded by `lint-imports` through `[tool.importlinter] contract_types` in pyproject.toml
(lint-imports puts the working directory on `sys.path`).
"""

from __future__ import annotations

import sys
from typing import cast

import grimp
from importlinter import Contract, ContractCheck, fields, output


class ExternalAllowlistContract(Contract):
    """`source_modules` (and their descendants) import only stdlib, `allowed_external` and
    the project's own root packages."""

    type_name = "external_allowlist"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_external = fields.ListField(subfield=fields.StringField(), required=False)

    def _strings(self, field: str) -> list[str]:
        """A parsed list field (set on the instance by `Contract._populate_fields`)."""
        return cast("list[str]", self.__dict__.get(field) or [])

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = set(self.session_options["root_packages"])
        allowed = set(self._strings("allowed_external")) | set(sys.stdlib_module_names) | roots
        allowed.add("__future__")
        invalid: list[dict[str, object]] = []
        for source in sorted(self._strings("source_modules")):
            modules = {source} | graph.find_descendants(source)
            for importer in sorted(modules):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    top = imported.split(".")[0]
                    if top in allowed:
                        continue
                    details = graph.get_import_details(importer=importer, imported=imported)
                    lines = sorted({int(d["line_number"]) for d in details})
                    invalid.append({"importer": importer, "imported": imported, "lines": lines})
        return ContractCheck(kept=not invalid, metadata={"invalid": invalid})

    def render_broken_contract(self, check: ContractCheck) -> None:
        allowed = ", ".join(["stdlib", *sorted(self._strings("allowed_external"))])
        for item in check.metadata["invalid"]:
            lines = ", ".join(f"l.{n}" for n in item["lines"])
            output.print_error(
                f"{item['importer']} imports {item['imported']} ({lines}); allowed: {allowed}",
                bold=False,
            )
        output.new_line()
