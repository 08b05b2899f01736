import pytest

from curation.contracts import ContractError, import_contract, load_contract, records_contract
from data_contracts import HERE


def test_shipped_contracts_load():
    c = import_contract()
    assert c.tag == "import_file@1.0.0"
    assert c.fields["text"].required and c.fields["text"].max_length == 20000
    assert "not_blank" in c.fields["text"].rules and c.fields["source_id"].unique
    assert records_contract().fields["record_id"].required
    assert sorted(p.name for p in HERE.glob("*.yaml")) == ["export_file.yaml", "import_file.yaml",
                                                          "instruction_file.yaml", "records.yaml"]


def test_unknown_rule_is_refused(tmp_path):
    text = (HERE / "import_file.yaml").read_text().replace("implementation: not_blank", "implementation: magic")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ContractError, match="magic"):
        load_contract(tmp_path / "c.yaml")


def test_invalid_odcs_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("apiVersion: v3.0.2\nkind: NotAContract\nid: x\n")
    with pytest.raises(ContractError, match="ODCS"):
        load_contract(tmp_path / "c.yaml")
