"""Load the ODCS v3 contracts in `data_contracts/` and turn them into the rules ingest enforces.

A contract is validated twice: against the standard's JSON schema and by its pydantic models
(`open-data-contract-standard`). Custom quality rules name their check in `implementation`; a rule the engine
does not know is an error, so a contract cannot silently promise a check nobody runs.
"""

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jsonschema
import yaml
from open_data_contract_standard.model import OpenDataContractStandard

from curation.errors import CurateError
from data_contracts import HERE as CONTRACTS_DIR

KNOWN_RULES = {"not_blank", "no_nul", "valid_utf8", "in_label_set", "row_shape",
               # instruction files (data_contracts/instruction_file.yaml, enforced by curation.instructions)
               "valid_roles", "alternating_turns", "ends_with_assistant", "max_tokens"}


class ContractError(CurateError):
    """A contract file that is not valid ODCS v3 or asks for a rule the engine does not have."""


@dataclass(frozen=True)
class FieldRules:
    name: str
    required: bool = False
    unique: bool = False
    max_length: int | None = None
    min_length: int | None = None
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Contract:
    id: str
    name: str
    version: str
    fields: dict[str, FieldRules]
    row_rules: tuple[str, ...] = ()
    model: OpenDataContractStandard | None = field(default=None, compare=False, repr=False)

    @property
    def tag(self) -> str:
        """What stores record as `contract_version`: `name@version`."""
        return f"{self.name}@{self.version}"


@functools.cache
def _odcs_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files("open_data_contract_standard").joinpath("schema.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)  # the standard's own schema: no meta-check


def load_contract(path: str | Path) -> Contract:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ContractError(f"{path}: cannot read the contract ({e})") from None
    try:
        _odcs_validator().validate(raw)
        model = OpenDataContractStandard(**raw)
    except (jsonschema.ValidationError, ValueError) as e:
        msg = e.message if isinstance(e, jsonschema.ValidationError) else str(e)
        raise ContractError(f"{path}: not a valid ODCS v3 contract: {msg}") from None
    obj = model.schema_[0]
    fields = {}
    for p in obj.properties or []:
        opts = p.logicalTypeOptions or {}
        rules = tuple(q.implementation for q in p.quality or [] if q.type == "custom")
        fields[p.name] = FieldRules(p.name, bool(p.required), bool(p.unique), opts.get("maxLength"),
                                    opts.get("minLength"), rules)
    row_rules = tuple(q.implementation for q in obj.quality or [] if q.type == "custom")
    unknown = {r for f in fields.values() for r in f.rules} | set(row_rules)
    unknown -= KNOWN_RULES
    if unknown:
        raise ContractError(f"{path}: unknown quality rule(s) {sorted(unknown)}; known: {sorted(KNOWN_RULES)}")
    return Contract(model.id, model.name, model.version, fields, row_rules, model)


@functools.cache
def import_contract() -> Contract:
    return load_contract(CONTRACTS_DIR / "import_file.yaml")


@functools.cache
def instruction_contract() -> Contract:
    return load_contract(CONTRACTS_DIR / "instruction_file.yaml")


@functools.cache
def records_contract() -> Contract:
    return load_contract(CONTRACTS_DIR / "records.yaml")


@functools.cache
def export_contract() -> Contract:
    return load_contract(CONTRACTS_DIR / "export_file.yaml")
